"""``logger=``: a live view of the same epoch rows on every training path, never part of the run id."""

from __future__ import annotations

import pytest

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
    with pytest.raises(ConfigError, match="logger=mlflow needs the mlflow package: pip install mlflow"):
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

    monkeypatch.setattr("ferbench.training.solo.build_logger", fake)
    monkeypatch.setattr("ferbench.training.packing.build_logger", fake)
    record = run(
        make_cfg("model.drop_rate=0", "split=kfold", "split.k=2", "trainer.max_epochs=2", f"trainer.pack={pack}")
    )
    assert len(made) == 2
    for recorder, (_, history) in zip(made, record.history.groupby("fold"), strict=True):
        assert [step for step, _ in recorder.rows] == [1, 2]
        sent = recorder.rows[-1][1]
        assert set(sent) == set(history.columns) - {"epoch", "fold"}
        assert sent["train_loss"] == pytest.approx(history["train_loss"].iloc[-1])
