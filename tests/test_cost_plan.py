"""``ferbench table ... --plan``: projected CPU hours of missing runs, from records, before anything trains."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ferbench.cli import main
from ferbench.cost_plan import RunCost, by_value, expected_epochs, measured_rate, record_rows, training_images
from ferbench.results.spec import find_specs
from fixtures_records import write_record

AMDCNN = {"model": "amdcnn", "input_size": 48, "in_chans": 1}


def test_rate_is_images_times_epochs_over_seconds_of_the_same_model_and_size(tmp_path, make_cfg):
    results = tmp_path / "results"
    # 80 + 10 training-side images x 5 epochs in 9 s, twice: 100 images/s; another size must not count
    write_record(results, "a", [0.5, 0.6], columns={**AMDCNN, "train_seconds": 4.5, "fps_device": "cpu (1 threads)"})
    write_record(results, "b", [0.5], columns={**AMDCNN, "input_size": 100, "train_seconds": 0.1})
    rows = record_rows([results])
    cfg = make_cfg("model=amdcnn", "model.input_size=48", "model.in_chans=1")
    rate = measured_rate(rows, cfg)
    assert rate is not None and rate.images_per_s == pytest.approx(100.0) and "2 recorded folds" in rate.source
    assert measured_rate(rows, make_cfg("model=lightvgg")) is None


def test_expected_epochs_from_converged_records_under_the_same_cap_else_the_cap(tmp_path, make_cfg):
    results = tmp_path / "results"
    write_record(results, "a", [0.5, 0.6], epochs=20, max_epochs=60, columns=AMDCNN)  # stopped early at 20
    write_record(results, "b", [0.5], epochs=60, max_epochs=60, columns=AMDCNN)  # cut by the cap: not counted
    rows = record_rows([results])
    assert expected_epochs(rows, make_cfg("model=amdcnn", "trainer.max_epochs=60")) == 20
    assert expected_epochs(rows, make_cfg("model=amdcnn", "trainer.max_epochs=30")) == 30
    assert expected_epochs(pd.DataFrame(), make_cfg("trainer.max_epochs=7")) == 7


def test_training_images_are_the_folds_as_drawn(make_cfg):
    cfg = make_cfg("split=kfold", "split.k=2")
    folds, images = training_images(cfg)
    n = 140 + 70  # the FAST synthetic set: both sides pooled into the folds
    assert folds == 2 and images == n  # each fold trains on the other half (its validation part included)


def test_most_claims_per_cpu_hour_first_and_unmeasured_last():
    from ferbench.cost_plan import Rate

    rate = Rate(100.0, "x")
    cheap = RunCost("t", "a", "r1", 5, 3600, 10, 10, rate, 2)  # 0.1 h, 2 claims
    dear = RunCost("t", "b", "r2", 5, 36000, 10, 10, rate, 2)  # 1 h
    unknown = RunCost("t", "c", "r3", 5, 100, 10, 10, None, 6)
    assert cheap.hours_expected == pytest.approx(0.1) and math.isnan(unknown.hours_expected)
    assert [c.run_id for c in by_value([unknown, dear, cheap])] == ["r1", "r2", "r3"]


def test_plan_prints_missing_runs_and_trains_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    spec = find_specs("amdcnn/table8")[0]
    assert "converge" in spec.profiles
    main(["table", "amdcnn/table8", "profile=smoke", "--plan", "--only", "baseline:ckplus", f"results_dir={results}"])
    out = capsys.readouterr().out
    assert "missing runs, profile=smoke" in out and "1 runs:" in out and "baseline:ckplus" in out
    assert not (results / "runs").exists()
