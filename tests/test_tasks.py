"""The factory's ``TASKS``: one entry per task, keyed by ``config.task_name``, that every loop builds a fold from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ferbench.config import task_name
from ferbench.data.splits import Fold
from ferbench.errors import ConfigError
from ferbench.factory import TASKS, task_for
from ferbench.training.detection.module import DetectionModule
from ferbench.training.fold import FoldData, RunWork
from ferbench.training.lightning.module import FERModule
from ferbench.training.packed.loop import pack_limit


def test_the_model_config_picks_the_entry_and_a_wrong_task_names_the_choices(make_cfg):
    assert TASKS.names() == ["classification", "detection"]
    assert task_name(make_cfg()) == "classification" and task_for(make_cfg()) is TASKS.get("classification")
    detector = make_cfg("model=yoloxnano_det")
    assert task_name(detector) == "detection" and task_for(detector) is TASKS.get("detection")
    with pytest.raises(ConfigError, match="unknown model.task 'segmentation'; choose from: classification, detection"):
        task_for(make_cfg("+model.task=segmentation"))


def test_what_each_entry_says_of_its_task(make_cfg):
    classify, detect = TASKS.get("classification"), TASKS.get("detection")
    assert (classify.packs, classify.targets, classify.min_classes) == (True, None, 2)
    assert (detect.packs, detect.targets is not None, detect.min_classes) == (False, True, 1)
    cfg = make_cfg("model=yoloxnano_det", "trainer.pack=8")
    assert pack_limit(cfg, detect.packs) == 1 and pack_limit(cfg, classify.packs) == 8


def test_each_entry_builds_its_own_module_and_refuses_the_other_task_s_targets(make_cfg):
    images, labels = np.zeros((8, 32, 32, 1), np.uint8), np.zeros(8, np.int64)
    fold = Fold(0, np.arange(6), np.arange(0), np.arange(6, 8))
    cfg = make_cfg()
    model, loss = task_for(cfg).model_and_loss(cfg, 2, labels)
    assert isinstance(task_for(cfg).module(cfg, model, loss, 2), FERModule)
    with pytest.raises(ConfigError, match="takes labels, not boxes"):
        task_for(cfg).datamodule(cfg, images, labels, fold, [np.zeros((1, 5), np.float32)] * 8)
    det = make_cfg("model=yoloxnano_det", "model.input_size=32")
    model, loss = task_for(det).model_and_loss(det, 2, labels)
    assert isinstance(task_for(det).module(det, model, loss, 2), DetectionModule)
    with pytest.raises(ConfigError, match="needs each image's face boxes"):
        task_for(det).datamodule(det, images, labels, fold)
    datamodule = task_for(det).datamodule(det, images, labels, fold, [np.zeros((1, 5), np.float32)] * 8, batch_size=3)
    assert datamodule.batch_size == 3 and datamodule.seed == det.seed


def test_the_lightning_loop_builds_every_fold_from_the_entry_it_is_handed(make_cfg, tmp_path):
    """A sixth task is one entry: the loop asks the entry for model, module and data module, nothing else."""
    from ferbench.training.lightning.loop import train_solo

    asked: list[str] = []
    base = TASKS.get("classification")

    def spy(name, build):
        def built(*args, **kwargs):
            asked.append(name)
            return build(*args, **kwargs)

        return built

    task = dataclasses.replace(
        base,
        name="spied",
        model_and_loss=spy("model_and_loss", base.model_and_loss),
        module=spy("module", base.module),
        datamodule=spy("datamodule", base.datamodule),
    )
    cfg = make_cfg("trainer.max_epochs=1", "trainer.batch_size=4", "model.input_size=16")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 16, 16, 1), dtype=np.uint8), np.arange(12) % 2
    fold = Fold(0, np.arange(8), np.arange(8, 10), np.arange(10, 12))
    work = RunWork(cfg, "spied", tmp_path / "runs" / "spied", 1, [fold])
    result = train_solo(work, fold, FoldData(images, labels, ["a", "b"], task))
    assert asked == ["model_and_loss", "module", "datamodule"]
    assert result.failure is None and len(result.history) == 1 and {"accuracy", "recall_a"} <= set(result.test_metrics)
