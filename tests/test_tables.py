"""Tables: spec parsing, aggregation on hand-made records with known answers, an end-to-end smoke table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from ferbench.errors import ConfigError
from ferbench.paths import experiments_dir
from ferbench.results.cells import aggregate_cell, t_test
from ferbench.results.render import cell_text
from ferbench.results.spec import Column, Row, StatTest, load_spec
from ferbench.tables import CellPlan, build_table
from fixtures_data import ck48
from fixtures_records import write_record


def _write_run(results: Path, run_id: str, accuracies: list[float], seed: int = 0, epochs: int = 5) -> None:
    write_record(results, run_id, accuracies, seed, epochs=epochs)


def _spec(tmp_path: Path, body: dict) -> object:
    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body))
    return load_spec(path)


def _plan(row_key: str, run_ids: list[str], metric: str = "accuracy", paper: float | None = None) -> CellPlan:
    row = Row(row_key, row_key, paper={"c": paper} if paper is not None else {})
    return CellPlan(row, Column("c", "C"), metric, "run", run_ids=run_ids)


def test_cell_mean_sd_over_seeds_and_folds(tmp_path):
    results = tmp_path / "results"
    _write_run(results, "a0", [0.80, 0.90], seed=0)
    _write_run(results, "a1", [0.70, 0.60], seed=1)
    spec = _spec(tmp_path, {"paper": "paperx", "table": "t1", "paper_scale": 100, "rows": [], "columns": []})
    cell = aggregate_cell(_plan("r", ["a0", "a1"], paper=80.0), spec, results)
    assert cell.n == 4 and cell.seeds == (0, 1) and cell.n_folds == 2
    assert cell.mean == pytest.approx(75.0)
    assert cell.sd == pytest.approx(np.std([80, 90, 70, 60], ddof=1))
    assert cell.delta == pytest.approx(-5.0)
    assert cell_text(cell, 100) == "75.00 ± 12.91 (80.00, Δ −5.00)"


def test_history_metric_and_derived_size(tmp_path):
    results = tmp_path / "results"
    _write_run(results, "h", [0.5, 0.5], epochs=3)
    spec = _spec(tmp_path, {"paper": "paperx", "table": "t1", "paper_scale": 1, "rows": [], "columns": []})
    at2 = aggregate_cell(_plan("r", ["h"], metric="history:train_acc@2"), spec, results)
    assert at2.values.tolist() == pytest.approx([0.2, 0.21])
    beyond = aggregate_cell(_plan("r", ["h"], metric="history:train_acc@30"), spec, results)
    assert beyond.n == 0 and math.isnan(beyond.mean)
    size = aggregate_cell(_plan("r", ["h"], metric="size_kb"), spec, results)
    assert size.mean == pytest.approx(1000 * 4 / 1024)


def test_missing_record_is_not_run_and_cited_is_cited(tmp_path):
    spec = _spec(tmp_path, {"paper": "paperx", "table": "t1", "rows": [], "columns": []})
    cell = aggregate_cell(_plan("r", ["nothing"], paper=50.0), spec, tmp_path)
    assert cell.status == "not run" and cell_text(cell, 100) == "not run (50.00)"
    cited = CellPlan(Row("x", "X", paper={"c": 71.28}, cited=True), Column("c", "C"), "accuracy", "cited")
    assert cell_text(aggregate_cell(cited, spec, tmp_path), 100) == "cited: 71.28"


def test_t_test_matches_scipy(tmp_path):
    results = tmp_path / "results"
    a, b = [0.60, 0.62, 0.61, 0.59], [0.66, 0.68, 0.67, 0.69]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        _write_run(results, f"a{i}", [x], seed=i)
        _write_run(results, f"b{i}", [y], seed=i)
    spec = _spec(tmp_path, {"paper": "paperx", "table": "t1", "paper_scale": 1, "rows": [], "columns": []})
    cells = [
        aggregate_cell(_plan("a", [f"a{i}" for i in range(4)]), spec, results),
        aggregate_cell(_plan("b", [f"b{i}" for i in range(4)]), spec, results),
    ]
    statistic, p_value, n_a, n_b = t_test(cells, StatTest("aux", "a", "b"), "c")
    expected = stats.ttest_ind(b, a)
    assert (n_a, n_b) == (4, 4)
    assert statistic == pytest.approx(expected.statistic) and p_value == pytest.approx(expected.pvalue)


def test_spec_errors_name_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*colums"):
        _spec(tmp_path, {"paper": "p", "colums": []})
    with pytest.raises(ConfigError, match="row r1: paper values for unknown column"):
        _spec(tmp_path, {"columns": [{"key": "a"}], "rows": [{"key": "r1", "paper": {"b": 1}}]})


TABLE = {
    "paper": "paperx",
    "table": "t1",
    "title": "Tiny ablation",
    "paper_scale": 100,
    "base": ["model=simplecnn", "model.widths=[8,16]", "aug=none"],
    "profiles": {"smoke": ["trainer.max_epochs=1", "trainer.batch_size=32"], "paper": ["trainer.max_epochs=1"]},
    "columns": [
        {
            "key": "syn",
            "label": "Synthetic",
            "overrides": ["data=synthetic", "data.options.n_train=70", "data.options.n_test=35"],
        },
        {"key": "real", "label": "Real folder", "overrides": ["data=folder", "data.root=/nonexistent/faces"]},
    ],
    "rows": [
        {"key": "small", "label": "Small", "overrides": ["model.drop_rate=0.0"], "paper": {"syn": 50.0}},
        {"key": "cited", "label": "Other [1]", "cited": True, "paper": {"syn": 60.0, "real": 61.0}},
    ],
}


def _cells(md: str) -> list[str]:
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    return [c.strip() for line in rows for c in line.strip("|").split("|")[1:]]


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_table_end_to_end_and_rerun_trains_nothing(tmp_path, profile):
    spec = _spec(tmp_path, TABLE)
    extra = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "trainer.progress_bar=false"]
    first = build_table(spec, profile, extra)
    md = first.paths["md"].read_text()
    for label in ("Synthetic", "Real folder", "Small", "Other [1]"):
        assert label in md
    cells = _cells(md)
    assert len(cells) == 4
    assert all(c.startswith(("cited:", "no data")) or c[0].isdigit() for c in cells), cells
    if profile == "paper":
        assert "no data" in md and "/nonexistent/faces" in md
        assert first.trained == 1
    else:
        assert "†" in md and "trained on `synthetic`" in md
        assert first.trained == 2
    csv = pd.read_csv(first.paths["csv"])
    assert sorted(csv["status"]) == sorted(["ours", "cited", "cited", "no data" if profile == "paper" else "ours"])
    assert first.paths["tex"].read_text().startswith("\\begin{table}")
    again = build_table(spec, profile, extra)
    assert again.trained == 0
    assert again.paths["md"].read_text() == md


def _experiment_specs() -> list:
    from ferbench.paths import experiments_dir

    return [load_spec(p) for p in sorted(experiments_dir().glob("*/*.yaml"))]


@pytest.mark.parametrize(
    "spec", [s for s in _experiment_specs() if s.kind in ("runs", "confusion")], ids=lambda s: s.name
)
def test_paper_profile_patience_is_the_tables_stated_one(spec):
    """Fixed-epoch papers must not stop early: every cell's composed patience equals the YAML's ``paper_patience``."""
    from ferbench.config import compose_config

    assert spec.paper_patience is not None, f"{spec.name}: no paper_patience"
    rows = [r for r in spec.rows if not r.cited] if spec.kind == "runs" else [Row("matrix", "matrix")]
    columns = spec.columns if spec.kind == "runs" else [Column("", "")]
    assert rows and columns
    for row in rows:
        for column in columns:
            overrides = [
                *spec.base,
                *spec.profile_overrides("paper"),
                *spec.overrides,
                *column.overrides,
                *row.overrides,
            ]
            cfg = compose_config(overrides)
            assert cfg.trainer.early_stopping_patience == spec.paper_patience, (spec.name, row.key, column.key)


def test_command_line_group_choice_replaces_the_tables_keys_for_that_group(tmp_path):
    """lightvgg Table 3 says split=holdout split.ratio=0.1; `split=kfold split.k=10` must win, not fail."""
    from ferbench.results.spec import find_specs
    from ferbench.tables import drop_superseded, plan

    table = ["split=holdout", "split.ratio=0.1", "trainer.max_epochs=100", "data=ckplus6", "data.face_crop=true"]
    assert drop_superseded(table, ["trainer.progress_bar=false"]) == table
    # trainer=gpu still has max_epochs: the table's setting stays; kfold has no ratio: it goes
    kept = drop_superseded(table, ["split=kfold", "split.k=10", "trainer=gpu"])
    assert kept == ["trainer.max_epochs=100", "data=ckplus6", "data.face_crop=true"]
    (spec,) = find_specs("lightvgg/table3")
    ck48(tmp_path / "ck")  # planning reads the data's listing: its fingerprint is part of every run id
    extra = ["split=kfold", "split.k=10", f"data_dirs.ckplus={tmp_path / 'ck'}", f"results_dir={tmp_path}"]
    cell = plan(spec, "paper", extra, [0])[0]
    cfg = cell.configs[0]
    assert (cfg.split.name, cfg.split.k, cfg.trainer.max_epochs, cfg.data.face_crop) == ("kfold", 10, 100, True)


def test_bad_table_override_is_a_config_error_not_a_traceback():
    from ferbench.config import compose_config

    with pytest.raises(ConfigError, match="split.nokey"):
        compose_config(["split.nokey=3"])


def test_command_line_overrides_that_change_the_experiment_are_named_in_the_notes(tmp_path):
    from ferbench.results.render import table_notes
    from ferbench.tables import identity_overrides

    extra = [
        "trainer.progress_bar=false",
        "results_dir=/x",
        "data_dirs.ckplus=/d",
        "trainer.max_epochs=10",
        "split=kfold",
    ]
    deviations = identity_overrides(extra)
    assert deviations == ["trainer.max_epochs=10", "split=kfold"]  # paths and display keys are not deviations
    spec = _spec(tmp_path, TABLE)
    notes = table_notes(spec, [], "paper", deviations)
    assert any("Not the `paper` profile as written" in n and "trainer.max_epochs=10 split=kfold" in n for n in notes)
    assert not any("as written" in n for n in table_notes(spec, [], "paper"))


def test_smoke_data_swap_drops_every_data_override_and_keeps_data_dirs():
    from ferbench.tables import _without_data

    overrides = ["data=ckplus6", "data.face_crop=true", "+data.extra=1", "~data", "data_dirs.ckplus=/x", "seed=1"]
    assert _without_data(overrides) == ["data_dirs.ckplus=/x", "seed=1"]


def test_smoke_runs_one_seed_and_at_most_two_folds_unless_the_command_line_says(tmp_path):
    """amdcnn Table 8 (5 seeds, CK+ 10-fold) at smoke: 1 seed, 2 folds per cell; --seeds and split.k still win."""
    from ferbench.results.spec import find_specs
    from ferbench.tables import plan

    (spec,) = find_specs("amdcnn/table8")
    assert len(spec.seeds) > 1
    extra = [f"results_dir={tmp_path}", f"data_dirs.ckplus={tmp_path / 'absent'}"]  # smoke: synthetic stands in
    ckplus = [c for c in plan(spec, "smoke", extra) if c.column and c.column.key == "ckplus"]
    assert ckplus and all(len(c.configs) == 1 and c.configs[0].split.k == 2 for c in ckplus)
    seeded = [c for c in plan(spec, "smoke", extra, seeds=[0, 1]) if c.column.key == "ckplus"]
    assert all(len(c.configs) == 2 for c in seeded)
    (kfold,) = find_specs("amdcnn/table7")  # every cell CK+ 10-fold: a command-line split.k applies to all
    cells = [c for c in plan(kfold, "smoke", [*extra, "split.k=3"]) if c.status == "run"]
    assert cells and all(c.configs[0].split.k == 3 for c in cells)


STATES_TABLE = {
    "paper": "paperx",
    "table": "t1",
    "title": "One row per run state",
    "paper_scale": 100,
    "base": ["model=simplecnn", "model.widths=[8,16]", "aug=none", "data=synthetic", "data.options.n_train=70"],
    "profiles": {"paper": ["trainer.max_epochs=1", "data.options.n_test=35"]},
    "columns": [{"key": "syn", "label": "Synthetic"}],
    "rows": [
        {"key": key, "label": key.capitalize(), "overrides": [f"model.drop_rate=0.{i}"], "paper": {"syn": 50.0}}
        for i, key in enumerate(["complete", "failed", "running", "incomplete", "corrupt", "absent"])
    ],
}


def _fake_records(results: Path, run_ids: dict[str, str]) -> None:
    """One record per state, written as ferbench writes them (failed.json, a held lock, a fold row, a cut csv)."""
    from ferbench.records.record import write_failure

    _write_run(results, run_ids["complete"], [0.5, 0.7])
    for state in ("failed", "running", "incomplete", "corrupt"):
        (results / "runs" / run_ids[state] / "fold_0").mkdir(parents=True)
        (results / "runs" / run_ids[state] / "fold_0" / "metrics.json").write_text("{}")
    write_failure(results / "runs" / run_ids["failed"], "non-finite loss (nan) at step 3", fold=1, epoch=2)
    (results / "runs" / run_ids["corrupt"] / "metrics.csv").write_text("run_id,seed,fold,accuracy\nx,0,")


def test_render_only_reads_every_cells_state_from_its_records(tmp_path):
    """A failed, running, half-done or corrupt run shows as such under --render-only (not as 'not run')."""
    from ferbench.records.record import run_lock

    spec = _spec(tmp_path, STATES_TABLE)
    extra = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}"]
    planned = build_table(spec, "paper", extra, render_only=True)
    assert planned.trained == 0 and all(c.status == "not run" for c in planned.cells)
    run_ids = {c.row: c.run_ids[0] for c in planned.cells}
    _fake_records(tmp_path / "results", run_ids)
    with run_lock(tmp_path / "results" / "runs" / run_ids["running"]):
        outcome = build_table(spec, "paper", extra, render_only=True)
    states = {c.row: c.status for c in outcome.cells}
    assert states == {
        "complete": "ours",
        "failed": "failed",
        "running": "running",
        "incomplete": "incomplete",
        "corrupt": "corrupt",
        "absent": "not run",
    }
    md = outcome.paths["md"].read_text()
    assert _cells(md) == ["60.00 ± 14.14 (50.00, Δ +10.00)", "failed (50.00)", "running (50.00)",
                          "incomplete (50.00)", "corrupt (50.00)", "not run (50.00)"]  # fmt: skip
    assert "non-finite loss (nan) at step 3" in md  # the failure's reason, read from failed.json
    assert "1 fold(s) recorded" in md and "another process" in md
    csv = pd.read_csv(outcome.paths["csv"], keep_default_na=False).set_index("row")
    assert list(csv["status"]) == list(states.values())
    assert csv.loc["failed", "problems"].startswith(f"failed {run_ids['failed']}: non-finite loss")
    assert outcome.trained == 0


def test_runs_another_process_holds_are_not_counted_as_trained(tmp_path):
    from ferbench.records.record import run_lock

    spec = _spec(tmp_path, {**STATES_TABLE, "rows": STATES_TABLE["rows"][:2]})
    extra = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "trainer.progress_bar=false"]
    planned = build_table(spec, "paper", extra, render_only=True)
    held = tmp_path / "results" / "runs" / planned.cells[1].run_ids[0]
    held.mkdir(parents=True)
    with run_lock(held):
        outcome = build_table(spec, "paper", extra)
    assert outcome.trained == 1 and not outcome.failures
    assert [c.status for c in outcome.cells] == ["ours", "running"]


CONFUSION_TABLE = {
    "paper": "paperx",
    "table": "t5",
    "title": "A paper's 3-class confusion matrix",
    "kind": "confusion",
    "paper_scale": 1,
    "base": ["model=simplecnn", "data=rafd"],
    "classes": ["Angry", "Contempt", "Happy"],
    "paper_matrix": [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]],
}


def _confusion_run(results: Path, run_id: str, classes: list[str]) -> None:
    _write_run(results, run_id, [0.5])
    counts = pd.DataFrame(np.eye(len(classes), dtype=int) * 3 + 1, columns=classes).assign(fold=0, true=classes)
    counts[["fold", "true", *classes]].to_csv(results / "runs" / run_id / "confusion.csv", index=False)


def test_confusion_table_renders_smokes_synthetic_classes_and_names_a_real_mismatch(tmp_path):
    """mnv3simam Table 5 (RaFD's 8 classes) at smoke trains on synthetic's 7: `make smoke-tables` crashed there."""
    from ferbench.results import render_kinds as kinds

    spec = _spec(tmp_path, CONFUSION_TABLE)
    results = tmp_path / "results"
    _confusion_run(results, "syn", ["angry", "happy", "sad"])
    plan = CellPlan(Row("matrix", spec.title), None, "accuracy", "run", run_ids=["syn"], substituted="rafd")
    cell = aggregate_cell(plan, spec, results)
    paths = kinds.write_confusion(spec, plan, cell, "smoke", results / "tables")
    md = paths["md"].read_text()
    assert "| true \\ predicted | angry | happy | sad |" in md and "Contempt" not in md.split("- ")[0]
    assert "paper's matrix is not compared" in md and (results / "tables" / "paperx" / "t5.png").is_file()
    real = CellPlan(Row("matrix", spec.title), None, "accuracy", "run", run_ids=["syn"])
    with pytest.raises(ConfigError, match=r"paperx/t1.yaml.*Contempt.*angry"):
        kinds.write_confusion(spec, real, aggregate_cell(real, spec, results), "paper", results / "tables")
    _confusion_run(results, "ours", ["happy", "contempt", "anger"])  # the data set's spelling and order
    match = CellPlan(Row("matrix", spec.title), None, "accuracy", "run", run_ids=["ours"])
    md = kinds.write_confusion(spec, match, aggregate_cell(match, spec, results), "paper", results / "tables")
    assert "| Angry | 0.67 (0.90, Δ -0.23) | 0.17 (0.10, Δ +0.07) | 0.17 (0.00, Δ +0.17) |" in md["md"].read_text()


def test_smoke_trains_at_most_64_pixels_unless_the_command_line_says(tmp_path):
    """mnv3simam (224 px) and lightvgg (128 px) at smoke: 64 px, a pipeline check in minutes; the paper keeps 224."""
    from ferbench.results.spec import find_specs
    from ferbench.tables import SMOKE_MAX_INPUT, plan

    (spec,) = find_specs("mnv3simam/table3")
    extra = [f"results_dir={tmp_path}", f"data_dirs.rafd={tmp_path / 'absent'}", f"data_dirs.ferplus={tmp_path / 'no'}"]
    extra.append(f"data_dirs.fer2013={tmp_path / 'none'}")
    smoke = [c for c in plan(spec, "smoke", extra) if c.status == "run"]
    assert smoke and {c.configs[0].model.input_size for c in smoke} == {SMOKE_MAX_INPUT}
    paper = [c for c in plan(spec, "paper", [*extra, "data=synthetic"]) if c.status == "run"]
    assert paper and {c.configs[0].model.input_size for c in paper} == {224}
    kept = [c for c in plan(spec, "smoke", [*extra, "model.input_size=96"]) if c.status == "run"]
    assert {c.configs[0].model.input_size for c in kept} == {96}
    (amdcnn,) = find_specs("amdcnn/table8")  # 48 px is left alone, its 100 px column (RAF-DB) gets 64
    small = [c for c in plan(amdcnn, "smoke", [*extra, f"data_dirs.ckplus={tmp_path / 'x'}"]) if c.status == "run"]
    assert small and {c.configs[0].model.input_size for c in small} == {48, SMOKE_MAX_INPUT}


CAPPED_TABLE = {
    "paper": "paperx",
    "table": "t1",
    "seeds": [0, 1, 2],
    "base": ["model=simplecnn", "data=synthetic"],
    "profiles": {
        "paper": ["trainer.max_epochs=300"],
        "budget": {"overrides": ["trainer.max_epochs=4"], "max_folds": 3, "seeds": [7]},
    },
    "columns": [
        {"key": "k10", "label": "10-fold", "overrides": ["split=kfold", "split.k=10"]},
        {"key": "hold", "label": "hold-out", "overrides": ["split=holdout"]},
    ],
    "rows": [{"key": "a", "label": "A"}],
}


def test_a_capped_profile_caps_folds_after_the_columns_and_sets_its_seeds(tmp_path):
    """A column's own ``split.k=10`` comes after a profile's overrides and would win over them: ``max_folds`` caps
    it afterwards; a hold-out column has no folds to cap. The command line's split.k and --seeds still win."""
    from ferbench.tables import plan

    spec = _spec(tmp_path, CAPPED_TABLE)
    assert spec.paper_epochs == 300 and spec.caps("paper").max_folds is None
    extra = [f"results_dir={tmp_path}"]
    k10, hold = plan(spec, "budget", extra)
    assert [c.split.k for c in k10.configs] == [3] and [c.seed for c in k10.configs] == [7]
    assert hold.configs[0].split.name == "holdout" and hold.configs[0].trainer.max_epochs == 4
    k10_paper, _ = plan(spec, "paper", extra)
    assert [c.split.k for c in k10_paper.configs] == [10, 10, 10]
    only_k10 = _spec(tmp_path, {**CAPPED_TABLE, "columns": CAPPED_TABLE["columns"][:1]})
    (k10_cli,) = plan(only_k10, "budget", [*extra, "split.k=4"], seeds=[1, 2])
    assert [(c.split.k, c.seed) for c in k10_cli.configs] == [(4, 1), (4, 2)]


def test_a_profile_can_override_one_column_after_its_own_overrides(tmp_path):
    """A budget's fewer epochs on the one large data set: the other columns keep the profile's."""
    from ferbench.tables import plan

    budget = {**CAPPED_TABLE["profiles"]["budget"], "columns": {"hold": ["trainer.max_epochs=2"]}}
    spec = _spec(tmp_path, {**CAPPED_TABLE, "profiles": {**CAPPED_TABLE["profiles"], "budget": budget}})
    k10, hold = plan(spec, "budget", [f"results_dir={tmp_path}"])
    assert k10.configs[0].trainer.max_epochs == 4 and hold.configs[0].trainer.max_epochs == 2
    assert plan(spec, "paper", [f"results_dir={tmp_path}"])[1].configs[0].trainer.max_epochs == 300
    wrong = {**budget, "columns": {"hld": ["trainer.max_epochs=2"]}}
    with pytest.raises(ConfigError, match="profile 'budget' names column 'hld', which the table lacks"):
        _spec(tmp_path, {**CAPPED_TABLE, "profiles": {"budget": wrong}})


def test_a_capped_profile_with_bad_keys_names_the_file_and_profile(tmp_path):
    bad = {**CAPPED_TABLE, "profiles": {"budget": {"overrides": [], "max_fold": 3}}}
    with pytest.raises(ConfigError, match=r"t1.yaml: profile 'budget': unknown key\(s\) \['max_fold'\]"):
        _spec(tmp_path, bad)
    bad = {**CAPPED_TABLE, "profiles": {"budget": {"max_folds": 1}}}
    with pytest.raises(ConfigError, match="max_folds must be an integer >= 2"):
        _spec(tmp_path, bad)


def test_capped_profile_notes_say_the_papers_epochs_and_flag_curves_still_improving(tmp_path):
    from ferbench.results.render import capped_profile_notes

    results = tmp_path / "results"
    _write_run(results, "flat", [0.8, 0.9], epochs=10)  # max_epochs 10 in _write_run: ran to the cap
    metrics = pd.read_csv(results / "runs" / "flat" / "metrics.csv")
    metrics.assign(best_epoch=[4, 10]).to_csv(results / "runs" / "flat" / "metrics.csv", index=False)
    spec = _spec(tmp_path, CAPPED_TABLE)
    cell = aggregate_cell(_plan("a", ["flat"]), spec, results)
    assert cell.improving_at_cap == 1  # fold 1's best epoch is its last; fold 0's is epoch 4
    notes = capped_profile_notes(spec, [cell], "budget")
    assert "at most 10 of the paper's 300" in notes[0]
    assert notes[1] == (
        "still improving at the cap: a / C: 1 of 2 folds had their best validation loss in the last two epochs allowed."
    )


def test_a_profiles_note_is_printed_under_its_table_and_must_name_a_profile(tmp_path):
    from ferbench.results.render import table_notes

    noted = {**CAPPED_TABLE, "profile_notes": {"paper": "GroupNorm in place of BatchNorm (ours)"}}
    spec = _spec(tmp_path, noted)
    assert "`paper`: GroupNorm in place of BatchNorm (ours)" in table_notes(spec, [], "paper")
    assert not any("GroupNorm" in n for n in table_notes(spec, [], "budget"))
    with pytest.raises(ConfigError, match="profile_notes names profile 'learns', which the table lacks"):
        _spec(tmp_path, {**CAPPED_TABLE, "profile_notes": {"learns": "x"}})


def test_a_layers_table_sizes_its_classifier_by_its_own_classes(tmp_path):
    """shufflecsp Table 1's last convolution has the paper's 32,263 parameters (512 x 7 x 9 + 7) because the
    table names 7 classes; a layers table that names none is an error, not a silent 7."""
    from dataclasses import replace

    from ferbench.config import compose_config
    from ferbench.results.render_kinds import render_static

    spec = load_spec(experiments_dir() / "shufflecsp" / "table1.yaml")
    paths = render_static(spec, compose_config([]), [], tmp_path)
    table = pd.read_csv(paths["csv"])
    conv_out = table[table["layer (paper)"].str.startswith("C, k=3,s=1,p=1 [512")]
    assert conv_out["params ours"].tolist() == ["32,263"]
    with pytest.raises(ConfigError, match="needs 'classes'"):
        render_static(replace(spec, classes=()), compose_config([]), [], tmp_path)
