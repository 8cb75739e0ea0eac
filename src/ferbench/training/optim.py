"""Optimisers and schedulers by name, from the ``optim`` config group."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ferbench.registry import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(torch.optim.SGD)

_NOT_OPTIMIZER_KEYS = ("name", "scheduler", "step_size", "gamma")


def optimizer_options(cfg: Any) -> dict[str, Any]:
    """The ``optim`` config's keys that are the torch optimiser's arguments (the rest name it and its scheduler)."""
    return {k: v for k, v in cfg.items() if k not in _NOT_OPTIMIZER_KEYS}


def build_optimizer(cfg: Any, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, **optimizer_options(cfg))


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, max_epochs: int):
    """``none`` | ``cosine`` (to zero over max_epochs) | ``step`` (x gamma every step_size epochs)."""
    schedulers = {
        "none": lambda: None,
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs),
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma),
    }
    if cfg.scheduler not in schedulers:
        from ferbench.errors import ConfigError

        raise ConfigError(f"optim.scheduler must be one of {sorted(schedulers)}, got {cfg.scheduler!r}")
    return schedulers[cfg.scheduler]()


def lightning_optimizers(cfg: Any, module: torch.nn.Module, max_epochs: int):
    """``configure_optimizers``'s answer for a ferbench LightningModule: every trainable parameter, the
    scheduler stepped once per epoch."""
    optimizer = build_optimizer(cfg, [p for p in module.parameters() if p.requires_grad])
    scheduler = build_scheduler(cfg, optimizer, max_epochs)
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
