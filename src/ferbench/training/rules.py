"""Rules every training loop shares (Lightning solo, Lightning detection, packed): each has one home here.

A rule written once cannot drift between the loops: a diverged run that one loop records as completed and another
fails is a silent wrong result (issue 23).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ferbench.errors import RunFailed
from ferbench.training.loggers import log_epoch

LOSS_CHECK_EVERY = 50
"""Training steps between looks at the per-step loss on an accelerator (each look waits for the device; on a CPU
every step is looked at). The epoch's means are always checked (``nonfinite_loss``)."""


@dataclass(frozen=True)
class BadLoss:
    """A non-finite training-step loss ``LossWatch`` found: which model (a pack's column; 0 alone), the value, and
    its batch of the epoch."""

    model: int
    value: float
    batch: int

    def reason(self, epoch: int) -> str:
        """The failure a record keeps, the same words whichever loop trained the model."""
        return f"loss became {self.value} at epoch {epoch}, batch {self.batch}"


class LossWatch:
    """The per-step loss check of every loop: losses stay on the device and are looked at together every
    ``every`` steps and at the epoch's end (``check``), because each look stalls the host until the device has
    caught up. On a CPU there is nothing to wait for: every step is looked at."""

    def __init__(self, every: int = LOSS_CHECK_EVERY) -> None:
        self.every = every
        self._losses: list[torch.Tensor] = []
        self._batches: list[int] = []

    def add(self, loss: torch.Tensor, batch: int) -> list[BadLoss]:
        """One step's loss (a scalar, or one per packed model, 0 for a model that sat the step out); what
        ``check`` found when this step was a look, else nothing."""
        self._losses.append(loss.detach().float().reshape(-1))
        self._batches.append(batch)
        if loss.device.type == "cpu" or len(self._losses) >= self.every:
            return self.check()
        return []

    def check(self) -> list[BadLoss]:
        """Look at the steps added since the last look (one wait for the device): each model's first bad one."""
        losses, batches = self._losses, self._batches
        self._losses, self._batches = [], []
        if not losses:
            return []
        stacked = torch.stack(losses).cpu()
        found = []
        for model in range(stacked.shape[1]):
            bad = (~torch.isfinite(stacked[:, model])).nonzero()
            if len(bad):
                step = int(bad[0, 0])
                found.append(BadLoss(model, stacked[step, model].item(), batches[step]))
        return found


WATCHED_LOSSES = ("train_loss", "val_loss")
"""The epoch means a history row carries whose non-finite value ends the run as failed."""


def nonfinite_loss(row: Mapping[str, float]) -> str | None:
    """Why an epoch's history row means the run diverged (a NaN or infinite train or validation loss), or None.

    Per-batch checks miss a loss that is finite on every training batch while the weights it leaves behind are not:
    the validation loss is then NaN, and early stopping would end the run on it and record chance accuracy as a
    completed run. Looking at the epoch's means catches both.
    """
    for key in WATCHED_LOSSES:
        value = row.get(key)
        if value is not None and not math.isfinite(float(value)):
            return f"{key.replace('_', ' ')} became {float(value)} at epoch {int(row['epoch'])}"
    return None


def epoch_row(
    epoch: int,
    seconds: float,
    train_loss: float,
    lr: float,
    train_acc: float | None = None,
    val_loss: float | None = None,
    val_acc: float | None = None,
) -> dict[str, float]:
    """One epoch's row of ``history.csv``, the same columns whichever loop trained it (a detector has no
    accuracies; a run without a validation part has no ``val_*``): absent values are left out, not blank."""
    row: dict[str, float] = {"epoch": epoch, "epoch_seconds": seconds, "train_loss": float(train_loss)}
    if train_acc is not None:
        row["train_acc"] = float(train_acc)
    row["lr"] = float(lr)
    if val_loss is not None:
        row["val_loss"] = float(val_loss)
    if val_acc is not None:
        row["val_acc"] = float(val_acc)
    return row


@dataclass
class StoppingRule:
    """Early stopping and the best epoch, for one model: the lowest validation loss is the best epoch (its weights
    are the ones tested); ``patience`` epochs without one ``min_delta`` under the last such low (``ref``), or a
    non-finite loss, stop training. Without a validation part every epoch is the best so far: the last is tested.

    Lightning's ``EarlyStopping(min_delta=...)`` + ``ModelCheckpoint(mode="min")`` semantics: the checkpoint follows
    every strict improvement, the patience count only those of at least ``min_delta``. Why a ``min_delta``: under a
    cosine decay the validation loss keeps creeping down by thousandths near the cap, so with strict improvement the
    rule may never fire. The record's ``best_epoch`` is this rule's, whichever loop fed it (``close_epoch``).
    """

    patience: int  # 0: never stop early (the best epoch is still chosen)
    min_delta: float = 0.0
    best: float = math.inf
    ref: float = math.inf
    wait: int = 0
    stopped: bool = False
    best_epoch: int = 0  # 1-based, as history.csv; 0 before the first epoch
    stopped_epoch: int = 0  # the epoch after which it stopped; 0 while it has not

    def observe(self, epoch: int, val_loss: float | None) -> bool:
        """Epoch ``epoch``'s validation loss (None: no validation part); True when it is the new best."""
        if val_loss is None:
            self.best_epoch = epoch
            return True
        if not math.isfinite(val_loss):
            self._stop(epoch)
            return False
        if val_loss < self.ref - self.min_delta:
            self.ref, self.wait = val_loss, 0
        else:
            self.wait += 1
            if self.patience > 0 and self.wait >= self.patience:
                self._stop(epoch)
        if val_loss < self.best:
            self.best, self.best_epoch = val_loss, epoch
            return True
        return False

    def _stop(self, epoch: int) -> None:
        self.stopped, self.stopped_epoch = True, epoch

    def state(self) -> dict[str, float | int]:
        """What a checkpoint keeps of the rule."""
        keys = ("best", "ref", "wait", "best_epoch", "stopped_epoch")
        return {key: getattr(self, key) for key in keys}

    def restore(self, state: Mapping[str, Any], history: Sequence[Mapping[str, float]] = ()) -> None:
        """From ``state()``, or from a checkpoint written before ``min_delta`` (no ``ref``: it was the best) or before
        the rule kept its best epoch (then the one ``history``, the epochs trained so far, says)."""
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.ref = float(state.get("ref", self.best))
        self.best_epoch = int(state.get("best_epoch") or history_best_epoch(history))
        self.stopped_epoch = int(state.get("stopped_epoch", 0))
        self.stopped = self.stopped_epoch > 0


def history_best_epoch(history: Sequence[Mapping[str, float]]) -> int:
    """The best epoch by the rule, read off a history: the first lowest validation loss, else the last epoch (0 for
    none). Only for rule state saved before the rule kept it."""
    validated = [row for row in history if row.get("val_loss") is not None and math.isfinite(row["val_loss"])]
    if validated:
        return int(min(validated, key=lambda row: row["val_loss"])["epoch"])
    return int(history[-1]["epoch"]) if history else 0


def close_epoch(
    history: list[dict[str, float]],
    rule: StoppingRule,
    loggers: Sequence[Any],
    epoch: int,
    seconds: float,
    train_loss: float,
    lr: float,
    *,
    train_acc: float | None = None,
    val_loss: float | None = None,
    val_acc: float | None = None,
) -> dict[str, float]:
    """An epoch's end, the same in every loop: its history row (``epoch_row``) appended to ``history`` and given to
    ``loggers``, then its validation loss to ``rule``. A diverged epoch raises ``RunFailed`` before any of that,
    so it is in no history and the rule never sees it."""
    row = epoch_row(epoch, seconds, train_loss, lr, train_acc, val_loss, val_acc)
    if reason := nonfinite_loss(row):
        raise RunFailed(reason)
    history.append(row)
    log_epoch(loggers, row)
    rule.observe(epoch, row.get("val_loss"))
    return row


STOPPING_STATE_KEYS = ("ValLossStopping", "EarlyStopping")
"""Checkpoint callback-state keys of the stopping rule: ours, and Lightning's in checkpoints written before it."""


def stopping_state(checkpoint: Mapping) -> Mapping[str, Any] | None:
    """The stopping rule's state in a Lightning checkpoint, None where it has none."""
    states = checkpoint.get("callbacks", {})
    return next((v for k, v in states.items() if k.startswith(STOPPING_STATE_KEYS)), None)


def stopped_early(checkpoint: Mapping) -> bool:
    """Had the run already stopped when ``checkpoint`` was saved? Fitting from it again would train one epoch too
    many (a fold killed between early stopping and its record)."""
    state = stopping_state(checkpoint)
    return state is not None and state.get("stopped_epoch", 0) > 0
