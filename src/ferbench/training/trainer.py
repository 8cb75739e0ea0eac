"""The Lightning Trainer from the ``trainer`` config: devices, precision, early stopping, checkpoints."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar


def quiet_lightning() -> None:
    """Progress bar on, quiet otherwise: no banner about devices, no hints we have already weighed."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*tensorboardX.*")


def build_trainer(cfg, checkpoint_dir: Path, has_val: bool) -> pl.Trainer:
    """Early stopping and best-checkpoint choice watch ``val_loss``: the validation part, never test."""
    quiet_lightning()
    t = cfg.trainer
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor="val_loss" if has_val else None,
        mode="min",
        save_last=True,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[pl.Callback] = [checkpoint]
    if has_val and t.early_stopping_patience > 0:
        callbacks.append(EarlyStopping("val_loss", patience=t.early_stopping_patience, mode="min"))
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(leave=False))
    return pl.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=bool(t.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(checkpoint_dir),
    )
