"""Rules every training loop shares (Lightning solo, Lightning detection, packed): each has one home here.

A rule written once cannot drift between the loops: a diverged run that one loop records as completed and another
fails is a silent wrong result (issue 23).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LOSS_CHECK_EVERY = 50
"""Training steps between looks at the per-step loss on an accelerator (each look waits for the device; on a CPU
every step is looked at). The epoch's means are always checked (``nonfinite_loss``)."""

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
    """Early stopping and the best checkpoint, for one model: the lowest validation loss is the best epoch (its
    weights are the ones tested); ``patience`` epochs without one ``min_delta`` under the last such low (``ref``),
    or a non-finite loss, stop training.

    Lightning's ``EarlyStopping(min_delta=...)`` + ``ModelCheckpoint(mode="min")`` semantics: the checkpoint follows
    every strict improvement, the patience count only those of at least ``min_delta``. Why a ``min_delta``: under a
    cosine decay the validation loss keeps creeping down by thousandths near the cap, so with strict improvement the
    rule may never fire. Kept in one place for the three loops: the Lightning ones through ``ValLossStopping``, the
    packed one per model.
    """

    patience: int  # 0: never stop early (the best epoch is still chosen)
    min_delta: float = 0.0
    best: float = math.inf
    ref: float = math.inf
    wait: int = 0
    stopped: bool = False

    def observe(self, val_loss: float) -> bool:
        """One epoch's validation loss; True when it is the new best."""
        if not math.isfinite(val_loss):
            self.stopped = True
            return False
        if val_loss < self.ref - self.min_delta:
            self.ref, self.wait = val_loss, 0
        else:
            self.wait += 1
            if self.patience > 0 and self.wait >= self.patience:
                self.stopped = True
        if val_loss < self.best:
            self.best = val_loss
            return True
        return False

    def state(self) -> dict[str, float | int]:
        """What a checkpoint keeps of the rule (whether it stopped is the loop's: it knows the epoch)."""
        return {"best": self.best, "ref": self.ref, "wait": self.wait}

    def restore(self, state: Mapping[str, Any]) -> None:
        """From ``state()``, or from a checkpoint written before ``min_delta`` (no ``ref``: it was the best)."""
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.ref = float(state.get("ref", self.best))


STOPPING_STATE_KEYS = ("ValLossStopping", "EarlyStopping")
"""Checkpoint callback-state keys of the stopping rule: ours, and Lightning's in checkpoints written before it."""


def stopped_early(checkpoint: Mapping) -> bool:
    """Had the run already stopped when ``checkpoint`` was saved? Fitting from it again would train one epoch too
    many (a fold killed between early stopping and its record)."""
    states = checkpoint.get("callbacks", {})
    return any(k.startswith(STOPPING_STATE_KEYS) and v.get("stopped_epoch", 0) > 0 for k, v in states.items())
