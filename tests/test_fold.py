"""The seam between runner and trainers (``training/fold.py``): a ``FoldResult`` in, the fold's record out, the
same columns and meanings whichever trainer made the result."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ferbench.data.splits import Fold
from ferbench.records import record as rec
from ferbench.training.fold import FoldData, FoldResult, RunWork, fold_row, write_fold_result

CLASSES = ["happy", "sad"]


def _work(cfg, tmp_path) -> tuple[RunWork, Fold]:
    fold = Fold(0, np.arange(10), np.arange(10, 12), np.arange(12, 16))
    return RunWork(cfg, "r1", tmp_path / "runs" / "r1", 1, [fold]), fold


def _history(val_losses: list[float]) -> pd.DataFrame:
    epochs = range(1, len(val_losses) + 1)
    return pd.DataFrame({"epoch": epochs, "epoch_seconds": 1.0, "train_loss": 1.0, "val_loss": val_losses})


def _data() -> FoldData:
    return FoldData(np.zeros((16, 4, 4, 1), np.uint8), np.zeros(16, np.int64), CLASSES, task=None)


def test_the_record_s_best_epoch_is_the_stopping_rule_s_not_a_second_reading_of_the_history(make_cfg, tmp_path):
    """The trainer's rule chose the weights tested; the record says that epoch, whatever the history's argmin."""
    work, fold = _work(make_cfg("trainer.max_epochs=5"), tmp_path)
    result = FoldResult(fold, _history([0.5, 0.4, 0.4]), best_epoch=3, train_seconds=3.0, test_seconds=1.0)
    row = fold_row(work, result, CLASSES, {}, "f")
    assert row["best_epoch"] == 3 and row["epochs_run"] == 3 and row["stopped_early"]
    assert row["train_images_per_s"] == pytest.approx(10 * 3 / 3.0)


def test_a_fold_run_to_the_cap_did_not_stop_early(make_cfg, tmp_path):
    work, fold = _work(make_cfg("trainer.max_epochs=2"), tmp_path)
    row = fold_row(work, FoldResult(fold, _history([0.5, 0.4]), best_epoch=2), CLASSES, {}, "f")
    assert not row["stopped_early"] and row["status"] == "completed" and row["n_train"] == 10


def test_a_completed_fold_is_recorded_and_only_then_its_resume_state_goes(make_cfg, tmp_path):
    work, fold = _work(make_cfg(), tmp_path)
    resume = tmp_path / "last.ckpt"
    resume.write_bytes(b"state")
    confusion = torch.tensor([[2, 0], [1, 1]])
    result = FoldResult(fold, _history([0.5]), best_epoch=1, confusion=confusion, resume_file=resume)
    assert write_fold_result(work, result, _data(), {}, "f") is None
    written = json.loads((rec.fold_dir(work.run_dir, 0) / "metrics.json").read_text())
    assert written["best_epoch"] == 1 and not resume.exists()


def test_a_failed_fold_writes_failed_json_and_keeps_its_resume_state(make_cfg, tmp_path):
    work, fold = _work(make_cfg(), tmp_path)
    work.run_dir.mkdir(parents=True)
    resume = tmp_path / "last.ckpt"
    resume.write_bytes(b"state")
    reason = "loss became nan at epoch 2, batch 3"
    result = FoldResult(fold, _history([0.5]), failure=reason, failed_epoch=2, resume_file=resume)
    line = write_fold_result(work, result, _data(), {}, "f")
    failed = json.loads((work.run_dir / "failed.json").read_text())
    assert (failed["reason"], failed["fold"], failed["epoch"]) == (reason, 0, 2) and resume.exists()
    assert line.startswith(f"run r1, fold 0: {reason}; recorded in {work.run_dir / 'failed.json'}; try a lower")
