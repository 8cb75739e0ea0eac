"""The callbacks ``build_trainer`` gives Lightning: speed options, per-epoch lines, the stopping rule, weight EMA."""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging

from ferbench.errors import ConfigError
from ferbench.training.rules import StoppingRule

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class SpeedOptions(pl.Callback):
    """Applies the ``trainer`` speed keys to the module and data module Lightning is given.

    ``channels_last`` (weights and input batches NHWC), ``compile`` (``compile_model``: in place, so state
    dicts and checkpoints keep their keys) and ``gpu_augment`` (``aug.train`` as batched torch ops on the
    training device, after the transfer, instead of albumentations per image in the loader).
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        gpu_augment: bool = False,
    ) -> None:
        self.channels_last, self.compile, self.compile_mode = channels_last, compile, compile_mode
        self.gpu_augment = gpu_augment

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        model = pl_module.model
        datamodule = trainer.datamodule
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
            if datamodule is not None:
                datamodule.channels_last = True
        if self.gpu_augment and datamodule is not None and stage == "fit":
            datamodule.augment_on_device()
        if self.compile and getattr(model, "_compiled_call_impl", None) is None:
            compile_model(model, None if self.compile_mode == "default" else self.compile_mode)


def compile_model(model: torch.nn.Module, mode: str | None = None) -> None:
    """``torch.compile`` in place, the training forward of a model with auxiliary classifiers too.

    ``nn.Module.compile`` compiles ``__call__`` only; FERModule trains such a model through its
    ``forward_with_aux``, which would otherwise run eager. Both stay out of the state dict. Shapes are static
    (``dynamic=False``: a run has a few batch sizes, each compiled once): inductor's dynamic shapes failed on
    amdcnn's CPU graph ("cannot determine truth value of Relational", torch 2.14.1, Xeon with AMX).
    """
    model.compile(mode=mode, dynamic=False)
    if hasattr(model, "forward_with_aux"):
        model.forward_with_aux = torch.compile(model.forward_with_aux, mode=mode, dynamic=False)


def speed_options(t: Any) -> SpeedOptions:
    mode = str(t.get("compile_mode", "default"))
    if mode not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return SpeedOptions(
        channels_last=bool(t.get("channels_last", False)),
        compile=bool(t.get("compile", False)),
        compile_mode=mode,
        gpu_augment=bool(t.get("gpu_augment", False)),
    )


class EpochLines(pl.Callback):
    """Where stderr is not a terminal: one ``ferbench: epoch N/M ...`` line per epoch (losses, accuracy, seconds).

    The module writes its history row in its own epoch-end hook, which Lightning calls after the callbacks' one:
    each row is printed when the next epoch starts, or when training ends."""

    def __init__(self) -> None:
        self.printed = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.printed = len(getattr(pl_module, "history", []))  # a resumed fold's earlier epochs were printed then

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_new(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_new(trainer, pl_module)

    def _print_new(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", [])
        for row in history[self.printed :]:
            shown = ", ".join(
                f"{k} {row[k]:.4g}" for k in ("train_loss", "train_acc", "val_loss", "val_acc") if k in row
            )
            seconds = row.get("epoch_seconds", 0.0)
            print(
                f"ferbench: epoch {int(row['epoch'])}/{trainer.max_epochs}: {shown} ({seconds:.1f} s)", file=sys.stderr
            )
        self.printed = len(history)


class ValLossStopping(pl.Callback):
    """Carries the shared ``StoppingRule`` into the Lightning module, which feeds it at each epoch's end
    (``rules.close_epoch``) and stops the trainer when it says so; its state goes into ``last.ckpt`` under this
    callback's key, so a resumed fold stops where it would have and keeps its best epoch."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.rule = StoppingRule(patience, min_delta)
        self._loaded: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ValLossStopping"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # a test after the fit keeps the rule that chose the tested epoch
            pl_module.stopping = self.rule

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # restored here, not in load_state_dict: a checkpoint from before the rule kept its best epoch needs the
        # module's history, loaded by now
        if self._loaded is not None:
            self.rule.restore(self._loaded, getattr(pl_module, "history", ()))

    def state_dict(self) -> dict[str, Any]:
        return self.rule.state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = dict(state)


def ema_decay(t: Any) -> float:
    """``trainer.ema_decay``, checked: 0 (off) or a decay in (0, 1)."""
    decay = float(t.get("ema_decay", 0) or 0)
    if not 0 <= decay < 1:
        raise ConfigError(f"trainer.ema_decay must be in [0, 1), got {decay}")
    return decay


def weight_average(t: Any) -> pl.Callback | None:
    """``trainer.ema_decay`` > 0: Lightning's EMA of the weights, updated every step. It is what validation
    sees, what the best checkpoint holds (the current weights ride along for resuming) and so what is tested."""
    decay = ema_decay(t)
    return EMAWeightAveraging(decay=decay, use_buffers=True) if decay else None
