"""One factory: config -> the objects that train. ``run``, the packed path, ``ferbench bench`` and the figures
all build their model, loss, LightningModule, data module and preprocessed images here, so none re-wires them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig
from torch import nn

from ferbench.attention import attention_factory
from ferbench.config import plain_dict
from ferbench.data import DataSource
from ferbench.data.datamodule import FERDataModule
from ferbench.data.preprocess import PreparedImages, prepare_images
from ferbench.data.splits import Fold
from ferbench.data.transforms import build_augmentation
from ferbench.errors import ConfigError
from ferbench.models import create_model
from ferbench.models.heads import HEADS
from ferbench.training.fold import FoldBuilders
from ferbench.training.losses import build_loss
from ferbench.training.mixup import build_mixup, no_aug_epochs
from ferbench.training.module import FERModule
from ferbench.training.packed import PackNet
from ferbench.training.trainer import pin_memory_for
from ferbench.training.warm_start import warm_start

MODEL_RESERVED_KEYS = (
    "name",
    "input_size",
    "in_chans",
    "task",
    "revision",
    "init",
    "freeze_epochs",
    "iou_class_targets",
)
"""Model config keys that are not builder switches; ``revision`` marks a changed network so its run ids change;
``init`` and ``freeze_epochs`` start it from another run's weights (``training/warm_start.py``);
``iou_class_targets`` shapes a detector's loss (``training/detection.py``)."""


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


def build_module(cfg: DictConfig, model: nn.Module, loss: nn.Module, num_classes: int) -> FERModule:
    """The LightningModule, with ``aug.mixup`` (a batch transform of the training step) where the config has one."""
    module = FERModule(model, loss, cfg.optim, num_classes, cfg.trainer.max_epochs, cfg.loss.get("aux_weight", 1.0))
    module.mixup = build_mixup(cfg.aug.get("mixup"))
    module.no_aug_epochs = no_aug_epochs(cfg.aug)
    return module


def build_datamodule(
    cfg: DictConfig, images: np.ndarray, labels: np.ndarray, fold: Fold, batch_size: int | None = None, **options
) -> FERDataModule:
    """The fold's data module with ``aug.train`` on its training part; ``options`` override the trainer keys."""
    settings = dict(
        batch_size=batch_size or cfg.trainer.batch_size,
        num_workers=cfg.trainer.num_workers,
        pin_memory=pin_memory_for(cfg),
        seed=cfg.seed,
    )
    settings.update(options)
    return FERDataModule(images, labels, fold, build_augmentation(cfg.aug.train), **settings)


FOLD_BUILDERS = FoldBuilders(
    model_and_loss=seeded_model_and_loss, module=build_module, datamodule=build_datamodule, net=build_net
)
"""What the runner hands its trainers (``training/fold.py``): every fold's fresh objects come from here."""


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
