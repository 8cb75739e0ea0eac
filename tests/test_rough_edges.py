"""Rough edges a hostile user found (issue 33, item 14): each one line that says what happened, once."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest

from ferbench.run import run
from ferbench.sweep_report import SweepRunFailed, _QuietReport

FERBENCH = [sys.executable, "-c", "from ferbench.cli import main; main()"]


def ferbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FERBENCH, *args], capture_output=True, text=True, timeout=300)


def lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# (a) A sweep: a bad value fails before anything trains; a job that fails is told once, in its own line.


def test_a_bad_value_in_a_sweep_is_one_line_exit_2_before_any_run_trains(tmp_path):
    done = ferbench("run", "-m", "seed=0,x", f"results_dir={tmp_path}")
    assert done.returncode == 2
    assert lines(done.stderr) == ["ferbench: error: seed must be an integer >= 0, got 'x'"]
    assert not (tmp_path / "runs").exists()


def test_a_failed_sweep_job_is_its_own_line_and_hydra_does_not_report_it_again(tmp_path):
    done = ferbench(
        "run", "-m", "data=ckplus", f"data_root={tmp_path / 'nowhere'}", "seed=0,1", f"results_dir={tmp_path}"
    )
    assert done.returncode == 1
    said = lines(done.stderr)
    assert len(said) == 2 and all(line.startswith("ferbench: error: data folder not found: ") for line in said)


def test_the_quiet_report_drops_hydras_three_writes_and_passes_a_real_traceback():
    out = io.StringIO()
    quiet = _QuietReport(out)
    for text in (
        "ferbench: error: seed must be an integer\n",
        "Error executing job with overrides: ['seed=x']" + os.linesep,
        SweepRunFailed.MARK + os.linesep,
        "\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n",
    ):
        quiet.write(text)
    assert out.getvalue() == "ferbench: error: seed must be an integer\n"
    real = ["Error executing job with overrides: ['seed=1']\n", "Traceback (most recent call last):\n", "\nSet ...\n"]
    for text in real:
        quiet.write(text)
    assert out.getvalue().endswith("".join(real))


# (b) A fold killed after its last epoch, before its record: resumed to be tested, and said so.


class Killed(Exception):
    pass


def test_a_fold_killed_after_its_last_epoch_says_it_is_only_tested(make_cfg, monkeypatch, caplog):
    from ferbench.training.lightning.module import FERModule

    cfg = make_cfg("trainer.max_epochs=2")

    def die(module):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(FERModule, "on_test_start", die, raising=False)
        with pytest.raises(Killed):
            run(cfg)
    with caplog.at_level(logging.INFO, logger="ferbench"):
        again = run(cfg)
    assert "from epoch 3 of 2" not in caplog.text
    assert "resumed fold 0: its 2 epochs were trained already (trainer.max_epochs=2); nothing more to train" in (
        caplog.text
    )
    assert list(again.history["epoch"]) == [1, 2]


# (c) Two `ferbench table` processes sharing a table: each counts only the runs it trained.

TINY_TABLE = {
    "paper": "paperx",
    "table": "t1",
    "title": "Tiny",
    "base": ["model=simplecnn", "model.widths=[8,16]", "aug=none", "data=synthetic"],
    "profiles": {"smoke": ["trainer.max_epochs=1", "trainer.batch_size=32", "trainer.threads=1"]},
    "columns": [
        {"key": "syn", "label": "Synthetic", "overrides": ["data.options.n_train=70", "data.options.n_test=35"]}
    ],
    "rows": [{"key": "a", "label": "A"}, {"key": "b", "label": "B", "overrides": ["model.drop_rate=0.0"]}],
}


def test_runs_another_process_finished_meanwhile_are_not_counted_as_trained_here(tmp_path, monkeypatch):
    import yaml

    from ferbench import tables
    from ferbench.results.spec import load_spec

    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(TINY_TABLE))
    spec = load_spec(path)
    extra = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "trainer.progress_bar=false"]
    planned = tables.pending_runs

    def the_other_process_trains_row_a(cells):
        todo = planned(cells)
        for cfg in todo.values():  # as a second `ferbench table` would, once this one had planned
            if cfg.model.drop_rate != 0.0:
                run(cfg)
        return todo

    monkeypatch.setattr(tables, "pending_runs", the_other_process_trains_row_a)
    outcome = tables.build_table(spec, "smoke", extra)
    assert (outcome.trained, outcome.left_to_others, outcome.failures) == (1, 1, {})


# (d) A Grad-CAM figure drawn with fewer rows than its table names says which it left out.


def test_a_gradcam_row_without_maps_is_named_when_the_figure_is_drawn_without_it(tmp_path, caplog):
    import yaml

    from ferbench.results.spec import load_spec
    from ferbench.tables import build_table

    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir()
    figure = {"kind": "gradcam", "rows": ["a", "b"], "column": "syn", "n_images": 3}
    path.write_text(yaml.safe_dump({**TINY_TABLE, "figures": [figure]}))
    extra = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "trainer.progress_bar=false"]
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        outcome = build_table(load_spec(path), "smoke", extra, only=["a"])
    assert "t1_gradcam_syn" in outcome.paths
    assert "paperx/t1: Grad-CAM figure drawn without row(s) b: no run of theirs in column syn has stored maps" in (
        caplog.text
    )


# (e) One image filed under two classes of a folder data set: one warning line with the count.


def test_images_in_two_class_folders_are_counted_in_one_warning_once(tmp_path, caplog, monkeypatch):
    import shutil

    from ferbench.data import folder
    from fixtures_data import face, write

    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    for k, name in enumerate(["happy", "sad"]):
        for i in range(3):
            write(tmp_path / "faces" / name / f"{name}{i}.png", face(10 * k + i))
    for i in range(2):  # two of happy's images copied into sad as well
        shutil.copy(tmp_path / "faces" / "happy" / f"happy{i}.png", tmp_path / "faces" / "sad" / f"copy{i}.png")
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        folder.load_folder(tmp_path / "faces")
        folder.load_folder(tmp_path / "faces")
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        f"{tmp_path / 'faces'}: 2 image(s) are filed under two or more classes (same bytes, e.g. happy/happy0.png "
        "and sad/copy0.png); each copy keeps its folder's label"
    ]


def test_a_folder_data_set_without_shared_images_warns_nothing(tmp_path, caplog, monkeypatch):
    from ferbench.data import folder
    from fixtures_data import face, write

    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))
    for k, name in enumerate(["happy", "sad"]):
        write(tmp_path / "faces" / name / "a.png", face(k))  # one name in both classes, different images
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        folder.load_folder(tmp_path / "faces")
    assert not caplog.records


# (f) Third-party warnings ferbench handles itself are filtered in one place; any other still shows.


def test_known_noisy_warnings_are_dropped_and_others_still_show():
    import warnings

    import numpy as np
    import torch
    from scipy import stats
    from torchmetrics.classification import MulticlassAveragePrecision

    from ferbench.quiet import quiet_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        stats.ttest_rel([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # seeds that agree: nan, and two RuntimeWarnings
        metric = MulticlassAveragePrecision(num_classes=3)  # class 2 absent from the test set
        metric.update(torch.softmax(torch.randn(6, 3), 1), torch.tensor([0, 0, 1, 1, 0, 1]))
        metric.compute()
        assert not [str(w.message) for w in caught]
        np.float64(1.0) / np.float64(0.0)  # ours, not scipy's: still shown
        warnings.warn("something new", UserWarning, stacklevel=1)
    assert [w.category for w in caught] == [RuntimeWarning, UserWarning]


# A key the default choice of its group has, set for a choice that lacks it: not "did you mean <the same key>?"


def test_a_key_of_another_choice_is_not_suggested_as_its_own_nearest_key():
    from ferbench.config import compose_config
    from ferbench.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        compose_config(["data=ckplus", "data.options.n_train=140"])
    assert str(raised.value) == (
        "unknown config key data.options.n_train for data=ckplus; only another choice of its group has it"
    )
