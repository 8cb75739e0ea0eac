"""``logger=``: a live view of the same epoch rows on every training path, never part of the run id."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from ferbench.config import validate
from ferbench.data.identity import run_id_of
from ferbench.errors import ConfigError
from ferbench.run import run


class Recorder:
    """A Lightning-logger stand-in: keeps what it was sent."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []
        self.finalized = False

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.rows.append((step, metrics))

    def finalize(self, status: str) -> None:
        self.finalized = True

    # what Lightning asks of a logger it was given
    name, version, save_dir, log_dir, experiment = "recorder", "0", None, None, None

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def save(self) -> None:
        pass

    @property
    def group_separator(self) -> str:
        return "/"

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        pass


def test_logger_is_not_part_of_the_run_id(make_cfg):
    assert run_id_of(make_cfg("logger=tensorboard")) == run_id_of(make_cfg()) == run_id_of(make_cfg("logger=wandb"))


def test_a_logger_without_its_package_is_one_line_before_training(make_cfg, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(
        ConfigError,
        match=r"logger=mlflow needs the mlflow package: pip install mlflow-skinny \(or the extra, '\.\[loggers\]'\)$",
    ):
        validate(make_cfg("logger=mlflow"))
    with pytest.raises(ConfigError, match="logger=tensorboard needs the tensorboard or tensorboardX package"):
        validate(make_cfg("logger=tensorboard"))
    validate(make_cfg("logger=csv"))


@pytest.mark.parametrize("pack", ["off", "2"])
def test_every_path_sends_the_history_rows(make_cfg, monkeypatch, pack):
    """Solo (Lightning) and packed training send each fold's history rows, the same keys, step = epoch."""
    from pytorch_lightning.loggers import Logger

    made: list[Recorder] = []

    class LightningRecorder(Recorder, Logger):  # Lightning checks the type of what it is given
        pass

    def fake(cfg, run_id, fold, fold_dir):
        made.append(LightningRecorder())
        return made[-1]

    monkeypatch.setattr("ferbench.training.lightning.loop.build_logger", fake)
    monkeypatch.setattr("ferbench.training.packed.loop.build_logger", fake)
    record = run(
        make_cfg("model.drop_rate=0", "split=kfold", "split.k=2", "trainer.max_epochs=2", f"trainer.pack={pack}")
    )
    assert len(made) == 2
    for recorder, (_, history) in zip(made, record.history.groupby("fold"), strict=True):
        assert [step for step, _ in recorder.rows] == [1, 2]
        sent = recorder.rows[-1][1]
        assert set(sent) == set(history.columns) - {"epoch", "fold"}
        assert sent["train_loss"] == pytest.approx(history["train_loss"].iloc[-1])


# --- the real packages (the ``loggers`` extra): each test skips where its package is not installed --------------

TINY = ("model.drop_rate=0", "trainer.max_epochs=2")


def _sent(history) -> list[str]:
    """The keys every logger gets: the history row less its epoch (the step) and fold (the run)."""
    return sorted(set(history.columns) - {"epoch", "fold"})


def test_tensorboard_writes_each_epoch_row_as_scalars(make_cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = run(make_cfg(*TINY, "logger=tensorboard"))
    logs = record.run_dir / "fold_0" / "logs"
    assert len(list(logs.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(logs))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == _sent(record.history)
    for tag in _sent(record.history):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx(record.history[tag].tolist(), rel=1e-6)
    hparams = OmegaConf.load(logs / "hparams.yaml")
    assert (hparams.run_id, hparams.fold, hparams.model.name) == (record.run_id, 0, "simplecnn")


def test_mlflow_keeps_each_fold_as_a_finished_run_in_a_file_store(make_cfg, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    # unset for the test (restored after): ferbench itself opts in to MLflow's file store for file: URIs
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    record = run(make_cfg(*TINY, "logger=mlflow", "split=kfold", "split.k=2"))
    store = record.run_dir.parents[1] / "mlruns"
    assert store.is_dir()
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("ferbench")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [f"{record.run_id}-fold0", f"{record.run_id}-fold1"]
    for fold, history in record.history.groupby("fold"):
        mlrun = runs[f"{record.run_id}-fold{fold}"]
        assert mlrun.info.status == "FINISHED"
        assert sorted(mlrun.data.metrics) == _sent(history)
        assert (mlrun.data.params["run_id"], mlrun.data.params["fold"]) == (record.run_id, str(fold))
        assert mlrun.data.params["model/name"] == "simplecnn"
        for key in _sent(history):
            steps = client.get_metric_history(mlrun.info.run_id, key)
            assert [m.step for m in steps] == [1, 2]
            assert [m.value for m in steps] == pytest.approx(history[key].tolist(), rel=1e-6)


def _wandb_records(path: Path) -> dict[str, list]:
    """An offline run's ``run-<id>.wandb`` by record type: W&B writes no summary or config files offline (that is
    ``wandb sync``'s work), only this log: its own 7-byte header, then LevelDB's log format (32 KiB blocks of chunks
    with a 7-byte header: crc, length, type FULL/FIRST/MIDDLE/LAST) of ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data, block, header = path.read_bytes(), 32768, 7
    assert data[:header] == b":W&B\xe1\xbe\x00", data[:header]
    records: dict[str, list] = {}
    at, pending = header, b""
    while at + header <= len(data):
        left = block - at % block
        length, kind = struct.unpack_from("<HB", data, at + 4)
        if left < header or kind == 0:  # the zero padding at a block's end
            at += left
            continue
        pending += data[at + header : at + header + length]
        at += header + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            kind_name = record.WhichOneof("record_type")
            records.setdefault(kind_name, []).append(getattr(record, kind_name))
    return records


def _wandb_items(items) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


@pytest.mark.parametrize("pack", ["off", "2"])
def test_wandb_offline_keeps_each_fold_as_its_own_finished_run(make_cfg, monkeypatch, tmp_path, pack):
    """Two folds one after the other (solo) or side by side (packed): one offline run each, named after the fold,
    with the run's config, every epoch row at its step, and finished (exit code 0) when the fold ends."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    record = run(make_cfg(*TINY, "logger=wandb", "split=kfold", "split.k=2", f"trainer.pack={pack}"))
    for fold, history in record.history.groupby("fold"):
        runs = list((record.run_dir / f"fold_{fold}" / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, runs
        wandb_run = _wandb_records(runs[0])
        assert [r.display_name for r in wandb_run["run"]] == [f"{record.run_id}-fold{fold}"]
        config = {k: v for update in wandb_run["config"] for k, v in _wandb_items(update.update).items()}
        assert (config["run_id"], config["fold"], config["model"]["name"]) == (record.run_id, fold, "simplecnn")
        rows = [_wandb_items(h.item) for h in wandb_run["history"]]
        assert [row["trainer/global_step"] for row in rows] == [1, 2]
        for key in _sent(history):
            assert [row[key] for row in rows] == pytest.approx(history[key].tolist(), rel=1e-6)
        assert [e.exit_code for e in wandb_run["exit"]] == [0]
