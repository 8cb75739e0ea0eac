"""One factory: config -> the objects that train. ``run``, the packed path, ``ferbench bench`` and Grad-CAM all build
their model, loss, LightningModule, data module and preprocessed images here, so none re-wires them.

``TASKS`` holds one entry per task (classification, detection), keyed by ``config.task_name``: what a fold of that
task is built from. The runner hands the entry to the trainers (``training/fold.py``, ``Task``); a new task is a new
entry here, not a branch in a loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig
from torch import nn

from ferbench.attention import attention_factory
from ferbench.config import plain_dict, task_name
from ferbench.data import DataSource
from ferbench.data.datamodule import FERDataModule
from ferbench.data.detection_transforms import DetectionDataModule, MosaicMixup, build_box_augmentation
from ferbench.data.preprocess import PreparedImages, prepare_images
from ferbench.data.splits import Fold
from ferbench.data.transforms import build_augmentation
from ferbench.errors import ConfigError
from ferbench.models import create_model
from ferbench.models.heads import HEADS
from ferbench.registry import Registry
from ferbench.training.detection.module import DetectionModule
from ferbench.training.detection.simota import LossOptions
from ferbench.training.fold import Task
from ferbench.training.lightning.module import FERModule
from ferbench.training.losses import build_loss
from ferbench.training.mixup import build_mixup, no_aug_epochs
from ferbench.training.packed.member import PackNet
from ferbench.training.process import pin_memory_for
from ferbench.training.warm_start import warm_start

LOSS_OPTION_KEYS = tuple(LossOptions.__dataclass_fields__)
"""Model config keys that are a detector's ``LossOptions``, not builder switches."""

MODEL_RESERVED_KEYS = (
    "name",
    "input_size",
    "in_chans",
    "task",
    "revision",
    "init",
    "freeze_epochs",
    *LOSS_OPTION_KEYS,
)
"""Model config keys that are not builder switches; ``revision`` marks a changed network so its run ids change;
``init`` and ``freeze_epochs`` start it from another run's weights (``training/warm_start.py``);
``LossOptions``' fields shape a detector's loss (``DetectionModule``); ``task`` picks the ``TASKS`` entry."""


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    """Model + its attention block + the head its loss needs, composed from three config groups."""
    switches = {k: v for k, v in plain_dict(cfg.model).items() if k not in MODEL_RESERVED_KEYS}
    attn_options = {k: v for k, v in plain_dict(cfg.attn).items() if k != "name"}
    try:
        return create_model(
            cfg.model.name,
            num_classes=num_classes,
            in_chans=cfg.model.in_chans,
            attn_layer=attention_factory(cfg.attn.name, **attn_options),
            head_layer=HEADS.get(cfg.loss.head),
            **switches,
        )
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    except TypeError as exc:  # a model or attention switch the builder does not take
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigError(f"model={cfg.model.name} attn={cfg.attn.name}: {exc}") from None


def seeded_model_and_loss(cfg: DictConfig, num_classes: int, train_labels: np.ndarray) -> tuple[nn.Module, nn.Module]:
    """A fold's fresh model (initialised after seeding with the run's seed: every fold of a run, packed or not,
    starts from the same weights, or from ``model.init``'s) and its loss (class weights from this fold's training
    labels)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, num_classes)
    warm_start(model, cfg)
    return model, build_loss(cfg.loss, train_labels, num_classes)


def build_net(cfg: DictConfig, num_classes: int, train_labels: np.ndarray) -> PackNet:
    """The packed path's unit: ``seeded_model_and_loss`` as one module."""
    model, loss = seeded_model_and_loss(cfg, num_classes, train_labels)
    return PackNet(model, loss, cfg.loss.get("aux_weight", 1.0))


def build_pack_member(cfg: DictConfig, num_classes: int, train_labels: np.ndarray) -> tuple[PackNet, object]:
    """What a pack member trains with: its unit (the solo run's initial weights) and its own ``aug.train``."""
    return build_net(cfg, num_classes, train_labels), build_augmentation(cfg.aug.train)


def build_module(cfg: DictConfig, model: nn.Module, loss: nn.Module, num_classes: int) -> FERModule:
    """The LightningModule, with ``aug.mixup`` (a batch transform of the training step) where the config has one."""
    module = FERModule(model, loss, cfg.optim, num_classes, cfg.trainer.max_epochs, cfg.loss.get("aux_weight", 1.0))
    module.mixup = build_mixup(cfg.aug.get("mixup"))
    module.no_aug_epochs = no_aug_epochs(cfg.aug)
    return module


def loader_settings(cfg: DictConfig, options: dict) -> dict:
    """A data module's loader keys from ``trainer`` (batch size, workers, pinned memory) and the run's seed;
    ``options`` override them (the benchmark's)."""
    settings = dict(
        batch_size=cfg.trainer.batch_size, num_workers=cfg.trainer.num_workers, pin_memory=pin_memory_for(cfg)
    )
    settings.update({k: v for k, v in options.items() if v is not None}, seed=cfg.seed)
    return settings


def build_datamodule(
    cfg: DictConfig, images: np.ndarray, labels: np.ndarray, fold: Fold, targets: None = None, **options
) -> FERDataModule:
    """The fold's data module with ``aug.train`` on its training part; ``options`` override the trainer keys."""
    if targets is not None:
        raise ConfigError(f"model={cfg.model.name} classifies: it takes labels, not boxes")
    return FERDataModule(images, labels, fold, build_augmentation(cfg.aug.train), **loader_settings(cfg, options))


def build_detection_module(cfg: DictConfig, model: nn.Module, loss: nn.Module, num_classes: int) -> DetectionModule:
    """A detector's LightningModule: YOLOX's own loss (``loss``, a classifier's, is not used), mosaic off for the
    last ``aug.no_aug_epochs``."""
    return DetectionModule(
        model,
        cfg.optim,
        num_classes,
        cfg.trainer.max_epochs,
        cfg.model.input_size,
        cfg.model.in_chans,
        no_aug_epochs=no_aug_epochs(cfg.aug),
        loss_options=loss_options(cfg.model),
    )


def loss_options(model_cfg: DictConfig) -> LossOptions:
    """A detector's ``LossOptions`` from its ``model.*`` keys (each absent key at YOLOX's default)."""
    defaults, given = LossOptions(), {}
    for key in (k for k in LOSS_OPTION_KEYS if k in model_cfg):
        kind, value = type(getattr(defaults, key)), model_cfg[key]
        if kind is bool and not isinstance(value, bool) or kind is float and not isinstance(value, int | float):
            raise ConfigError(f"model.{key}={value!r}: expected a {kind.__name__}, as {getattr(defaults, key)!r}")
        given[key] = kind(value)
    return LossOptions(**given)


def build_detection_datamodule(
    cfg: DictConfig, images: np.ndarray, labels: np.ndarray, fold: Fold, targets: list | None = None, **options
) -> DetectionDataModule:
    """A detector's fold: ``aug.train`` box-aware, mosaic and mix-up from ``aug.detection``, boxes as targets."""
    if targets is None:
        raise ConfigError(f"model={cfg.model.name} detects: it needs each image's face boxes")
    augment, mixing = build_box_augmentation(cfg.aug.train), MosaicMixup.from_config(cfg.aug.get("detection"))
    return DetectionDataModule(images, targets, fold, augment, mixing, **loader_settings(cfg, options))


def detection_targets(
    cfg: DictConfig, source: DataSource, keep: np.ndarray, labels: np.ndarray
) -> tuple[list[np.ndarray], dict[str, int]]:
    """Per kept image its (K, 5) targets at the model's input size (face boxes, cached beside the images), and the
    box counts for the record (what was done where there was not exactly one face)."""
    from ferbench.data.boxes import face_boxes

    if cfg.data.get("face_crop", False):
        raise ConfigError("data.face_crop=true crops each image to its face: a detector needs the whole image")
    cache = Path(cfg.cache_dir) if cfg.get("cache_dir") else None
    boxes = face_boxes(source, keep, cache, cfg.data.get("boxes") or None)
    return boxes.targets(labels, int(cfg.model.input_size)), boxes.counts


TASKS: Registry[Task] = Registry("model.task")
"""What a fold of each task is built from, keyed by ``model.task`` (``config.task_name``)."""
TASKS.register("classification")(
    Task(
        "classification",
        model=build_model,
        model_and_loss=seeded_model_and_loss,
        module=build_module,
        datamodule=build_datamodule,
        pack_member=build_pack_member,
    )
)
TASKS.register("detection")(
    Task(
        "detection",
        model=build_model,
        model_and_loss=seeded_model_and_loss,
        module=build_detection_module,
        datamodule=build_detection_datamodule,
        targets=detection_targets,
        min_classes=1,
    )
)


def task_for(cfg: DictConfig) -> Task:
    """The ``TASKS`` entry the config's model trains for; an unknown ``model.task`` names the choices."""
    try:
        return TASKS.get(task_name(cfg))
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None


def prepare(cfg: DictConfig, source: DataSource, progress: bool | None = None) -> PreparedImages:
    """``source``'s images decoded, cropped and resized as the config says (cached under ``cache_dir``)."""
    return prepare_images(
        source,
        cfg.model.input_size,
        cfg.model.in_chans,
        face_crop=bool(cfg.data.get("face_crop", False)),
        equalize=bool(cfg.data.get("equalize", False)),
        skip_corrupt=bool(cfg.data.get("skip_corrupt", False)),
        cache_dir=Path(cfg.cache_dir) if cfg.get("cache_dir") else None,
        progress=bool(cfg.trainer.progress_bar) if progress is None else progress,
    )
