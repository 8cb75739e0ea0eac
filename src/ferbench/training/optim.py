"""Optimisers and schedulers by name, from the ``optim`` config group: torch's for a model trained alone, and
``PackedOptimizer`` (the same update rules, elementwise, per model) for K models stacked in a pack.

``packed_optimizer_gap`` reads the same registry and config as ``build_optimizer``: a key the packed update cannot
honour sends the run to one model at a time with the reason in its record, never silently dropped."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

from ferbench.registry import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(torch.optim.SGD)

_NOT_OPTIMIZER_KEYS = ("name", "scheduler", "step_size", "gamma", "warmup_epochs")


def optimizer_options(cfg: Any) -> dict[str, Any]:
    """The ``optim`` config's keys that are the torch optimiser's arguments (the rest name it and its scheduler)."""
    return {k: v for k, v in cfg.items() if k not in _NOT_OPTIMIZER_KEYS}


def build_optimizer(cfg: Any, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, **optimizer_options(cfg))


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, max_epochs: int):
    """``none`` | ``cosine`` (to zero by max_epochs) | ``step`` (x gamma every step_size epochs), after
    ``warmup_epochs`` (0: none) of a linear ramp from lr / (warmup + 1) up to lr, as YOLOX warms up (per epoch
    here, so a pack steps it alike)."""
    warmup = int(cfg.get("warmup_epochs", 0) or 0)
    schedulers = {
        "none": lambda: None,
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(max_epochs - warmup, 1)),
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma),
    }
    if cfg.scheduler not in schedulers:
        from ferbench.errors import ConfigError

        raise ConfigError(f"optim.scheduler must be one of {sorted(schedulers)}, got {cfg.scheduler!r}")
    main = schedulers[cfg.scheduler]()
    if warmup <= 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
    if main is None:
        return ramp
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def lightning_optimizers(cfg: Any, module: torch.nn.Module, max_epochs: int):
    """``configure_optimizers``'s answer for a ferbench LightningModule: every trainable parameter, the
    scheduler stepped once per epoch."""
    optimizer = build_optimizer(cfg, [p for p in module.parameters() if p.requires_grad])
    scheduler = build_scheduler(cfg, optimizer, max_epochs)
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


# ------------------------------------------------------------------------- packed: K models' stacked weights


PACKED_OPTIMIZER_KEYS = {
    "adam": ("lr", "weight_decay", "betas", "eps"),
    "adamw": ("lr", "weight_decay", "betas", "eps"),
    "sgd": ("lr", "weight_decay", "momentum", "nesterov", "dampening"),
}
"""The torch optimiser arguments ``PackedOptimizer`` implements, per optimiser; any other argument packs only at
torch's default value (``amsgrad=false``), else the run trains one model at a time and its record says why."""


def packed_optimizer_gap(cfg: Any) -> str | None:
    """Why ``cfg`` (an ``optim`` config) cannot be honoured by a pack, or None: an optimiser without a packed
    update, or an argument the packed update ignores set to other than torch's default."""
    name = str(cfg.name)
    if name not in PACKED_OPTIMIZER_KEYS:
        return f"optim={name} has no packed update"
    defaults = {
        k: p.default for k, p in inspect.signature(OPTIMIZERS.get(name).__init__).parameters.items() if k != "self"
    }
    honoured = PACKED_OPTIMIZER_KEYS[name]
    for key, value in optimizer_options(cfg).items():
        if key in honoured or (key in defaults and value == defaults[key]):
            continue
        return f"optim.{key}={value} has no packed update (packs implement {', '.join(honoured)})"
    return None


class PackedOptimizer:
    """Adam, AdamW and SGD (torch's update rules, elementwise) over stacked weights, with per-model masks.

    Each model has its own step count (Adam's bias correction) and learning rate, and a masked-out model's
    weights and state do not move: Adam with a zero gradient would still move it.
    """

    def __init__(self, params: dict[str, torch.Tensor], cfg: Any, k: int, device: torch.device) -> None:
        self.params, self.name = params, str(cfg.name)
        if why := packed_optimizer_gap(cfg):
            raise ValueError(f"packed training cannot honour this optimiser: {why}")
        self.weight_decay = float(cfg.get("weight_decay", 0.0) or 0.0)
        self.betas = tuple(cfg.get("betas", (0.9, 0.999)))
        self.eps = float(cfg.get("eps", 1e-8))
        self.momentum = float(cfg.get("momentum", 0.0) or 0.0)
        self.nesterov = bool(cfg.get("nesterov", False))
        self.dampening = float(cfg.get("dampening", 0.0) or 0.0)
        if self.name == "adamw" and "weight_decay" not in cfg:
            self.weight_decay = 1e-2
        self.steps = torch.zeros(k, device=device)
        self.state: dict[str, dict[str, torch.Tensor]] = {
            n: {s: torch.zeros_like(p) for s in self._state_names()} for n, p in params.items()
        }
        self._momentum_started = torch.zeros(k, dtype=torch.bool, device=device)

    def _state_names(self) -> tuple[str, ...]:
        if self.name == "sgd":
            return ("momentum",) if self.momentum else ()
        return ("exp_avg", "exp_avg_sq")

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor | None) -> None:
        """One update of every model with ``active`` (None: all); ``lr`` is per model, shape [K]."""
        self.steps += 1 if active is None else active.to(self.steps.dtype)
        for name, p in self.params.items():
            if p.grad is None:
                continue
            update = self._adam if self.name != "sgd" else self._sgd
            update(p, p.grad, self.state[name], lr.view(-1, *[1] * (p.dim() - 1)), active)
        if self.name == "sgd" and self.momentum:
            self._momentum_started |= True if active is None else active

    def _adam(self, p, g, state, lr, active) -> None:
        beta1, beta2 = self.betas
        t = self.steps.view_as(lr)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        new_p = p * (1 - lr * self.weight_decay) if self.name == "adamw" and self.weight_decay else p
        if self.name == "adam" and self.weight_decay:
            g = g + self.weight_decay * p
        new_m = m + (1 - beta1) * (g - m)
        new_v = beta2 * v + (1 - beta2) * g * g
        bias1 = 1 - beta1**t
        bias2 = 1 - beta2**t
        denom = new_v.sqrt() / bias2.sqrt() + self.eps
        new_p = new_p - (lr / bias1) * new_m / denom
        masked_assign(m, new_m, active)
        masked_assign(v, new_v, active)
        masked_assign(p, new_p, active)

    def _sgd(self, p, g, state, lr, active) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state["momentum"]
            started = self._momentum_started.view(-1, *[1] * (p.dim() - 1))
            new_buf = torch.where(started, self.momentum * buf + (1 - self.dampening) * g, g)
            masked_assign(buf, new_buf, active)
            g = g + self.momentum * new_buf if self.nesterov else new_buf
        masked_assign(p, p - lr * g, active)

    def state_of(self, k: int) -> dict[str, Any]:
        return {
            "steps": float(self.steps[k]),
            "momentum_started": bool(self._momentum_started[k]),
            "state": {n: {s: t[k].clone() for s, t in st.items()} for n, st in self.state.items()},
        }

    def load_state_of(self, k: int, saved: dict[str, Any]) -> None:
        self.steps[k] = saved["steps"]
        self._momentum_started[k] = saved["momentum_started"]
        for n, st in saved["state"].items():
            for s, t in st.items():
                self.state[n][s][k].copy_(t)


def masked_assign(target: torch.Tensor, value: torch.Tensor, active: torch.Tensor | None) -> None:
    if active is None:
        target.copy_(value)
    else:
        target.copy_(torch.where(active.view(-1, *[1] * (target.dim() - 1)), value, target))


def lr_at_epoch(cfg: Any, max_epochs: int, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based) as the solo run's torch scheduler gives it (stepped per epoch)."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(cfg.lr))
    scheduler = build_scheduler(cfg, probe, max_epochs)
    for _ in range(epoch if scheduler is not None else 0):
        probe.step()
        scheduler.step()
    return float(probe.param_groups[0]["lr"])
