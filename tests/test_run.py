"""End to end: ``run(cfg)`` trains, tests and leaves a complete, reusable, resumable record."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from ferbench.data.identity import run_id_of
from ferbench.paths import config_dir
from ferbench.records import record as rec
from ferbench.run import run


def test_run_writes_complete_record(make_cfg):
    record = run(make_cfg())
    d = record.run_dir
    for name in ("config.yaml", "metrics.csv", "history.csv", "confusion.csv", "samples.csv.gz", "folds.npz"):
        assert (d / name).is_file(), name
    m = pd.read_csv(d / "metrics.csv")
    assert len(m) == 1
    row = m.iloc[0]
    for axis in rec.AXES:
        assert isinstance(row[axis], str) and row[axis]
    assert row["model"] == "simplecnn" and row["data"] == "synthetic" and row["split"] == "official"
    assert row["epochs_run"] == 1 and row["n_test"] == 70 and row["status"] == "completed"
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["map"] <= 1
    # weighted recall weights each class's recall by its test images: it is the accuracy (amdcnn Table 3)
    assert row["recall_weighted"] == pytest.approx(row["accuracy"], abs=1e-6)
    assert 0 <= row["precision_weighted"] <= 1 and 0 <= row["f1_weighted"] <= 1
    assert row["fps_batch1"] > 0 and row["fps_device"].startswith("cpu (")
    assert {f"recall_{c}" for c in json.loads(row["classes"])} <= set(m.columns)
    assert row["params"] > 0 and row["train_seconds"] > 0 and row["git_commit"]
    history = pd.read_csv(d / "history.csv")
    assert list(history["epoch"]) == [1]
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(history.columns)
    confusion = pd.read_csv(d / "confusion.csv")
    matrix = confusion.drop(columns=["fold", "true"]).to_numpy()
    assert matrix.sum() == 70 and row["accuracy"] == pytest.approx(matrix.trace() / 70)  # the record's own test
    assert row["best_epoch"] == 1 and not row["stopped_early"]
    assert not any(p.name.endswith(".tmp") for p in d.rglob("*"))


def test_run_id_is_stable_and_ignores_paths(make_cfg, tmp_path):
    a = make_cfg()
    b = make_cfg(f"results_dir={tmp_path / 'elsewhere'}", "trainer.progress_bar=true", "tag=hello")
    assert run_id_of(a) == run_id_of(b)
    assert run_id_of(a) != run_id_of(make_cfg("seed=1"))
    assert run_id_of(a) != run_id_of(make_cfg("optim.lr=0.01"))


def test_second_run_reuses_record(make_cfg):
    first = run(make_cfg())
    stamp = first.metrics["timestamp"].iloc[0]
    again = run(make_cfg())
    assert again.reused and not first.reused
    assert again.metrics["timestamp"].iloc[0] == stamp


def test_kfold_records_one_row_per_fold_and_resumes(make_cfg):
    cfg = make_cfg("split=kfold", "split.k=3", "data.options.n_train=84", "data.options.n_test=21")
    record = run(cfg)
    assert sorted(record.metrics["fold"]) == [0, 1, 2]
    assert record.metrics["n_test"].sum() == 105  # every image tested exactly once across folds
    stamps = record.metrics.set_index("fold")["timestamp"]
    # Simulate a sweep killed during fold 2: its row and the run's summary are gone.
    (record.run_dir / "metrics.csv").unlink()
    (rec.fold_dir(record.run_dir, 2) / "metrics.json").unlink()
    resumed = run(cfg)
    new = resumed.metrics.set_index("fold")["timestamp"]
    assert new[0] == stamps[0] and new[1] == stamps[1]  # finished folds not retrained
    assert new[2] != stamps[2]


def test_holdout_and_subject_free_split(make_cfg):
    record = run(make_cfg("split=holdout", "split.ratio=0.2"))
    assert record.metrics["n_test"].iloc[0] == 42  # 20% of 210


@pytest.mark.parametrize("protocol", ["standard", "select_on_test"])
def test_protocol_is_recorded_and_changes_validation(make_cfg, protocol):
    record = run(make_cfg(f"protocol={protocol}"))
    row = record.metrics.iloc[0]
    assert row["protocol"] == protocol
    assert (row["n_val"] == row["n_test"]) == (protocol == "select_on_test")


@pytest.mark.parametrize("choice", sorted(p.stem for p in (config_dir() / "data").glob("*.yaml")))
def test_records_name_the_data_config_chosen_not_its_loader(make_cfg, choice):
    """`data=ckplus6` and `data=ckplus` share a loader (data.name ckplus); the record must tell them apart."""
    cfg = make_cfg(f"data={choice}", fast=False)
    assert rec.axis_choices(cfg)["data"] == choice
    assert f"-{choice}-" in rec.run_id(cfg, "data-0123")


class Killed(BaseException):
    """A kill between a fold's training and its record (not an Exception: nothing may catch it)."""


def test_early_stopping_stops_at_patience_and_a_rerun_after_it_trains_no_more(make_cfg, monkeypatch, caplog):
    """No improvement can be min_delta=1000 under the best: patience 2 stops after epoch 3 of 6. A fold killed
    before its record resumes, trains nothing more and keeps the rule's best epoch."""
    import logging

    cfg = make_cfg("trainer.max_epochs=6", "trainer.early_stopping_patience=2", "trainer.early_stopping_min_delta=1000")
    real_write = rec.write_fold
    with monkeypatch.context() as patch:

        def killed(*args, **kwargs):
            raise Killed

        patch.setattr(rec, "write_fold", killed)
        with pytest.raises(Killed):
            run(cfg)
    assert rec.write_fold is real_write
    with caplog.at_level(logging.INFO, logger="ferbench"):
        record = run(cfg)
    assert "it had stopped early after epoch 3 of 6" in caplog.text
    row = record.metrics.iloc[0]
    assert row["epochs_run"] == 3 and bool(row["stopped_early"]) and bool(row["resumed"])
    history = record.history
    assert list(history["epoch"]) == [1, 2, 3]
    assert row["best_epoch"] == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    best = torch.load(record.run_dir / "fold_0" / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["epoch"] + 1 == row["best_epoch"]  # the weights tested are the best epoch's
