"""Exact resume: a run killed at any point and restarted from ``last.ckpt`` goes on as if never killed.

Two things Lightning does not give by itself: a ``last.ckpt`` written after *every* epoch (Lightning 2.6
writes it only when the monitored best improves) and atomically (a kill mid-write must not leave a truncated
file), and RNG state that does not depend on whether the process was restarted (each epoch re-seeded).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from ferbench.errors import UnsafeFile
from ferbench.records.atomic import atomic_path
from ferbench.records.integrity import set_aside
from ferbench.records.safe_load import load_weights


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    """Independent streams per (seed, fold, epoch): ``seed + epoch`` would make seed 0 epoch 1 = seed 1 epoch 0."""
    return int(np.random.SeedSequence([seed, fold, epoch]).generate_state(1)[0])


class EpochSeed(pl.Callback):
    """Re-seed Python, NumPy, torch and the train loader's sampler (its order and per-batch augmentation seeds)
    at every epoch start.

    Epoch ``k`` then depends only on the state it starts from and ``(seed, fold, k)``; the checkpoint restores
    that state (weights, optimiser, scheduler, callbacks, history). Lightning builds the loader and fetches
    the first batch of a fit's first epoch before ``on_train_epoch_start``: that epoch is seeded in
    ``on_fit_start`` (through the datamodule's ``seed``), so a fresh and a resumed epoch draw alike.
    """

    def __init__(self, seed: int, fold: int) -> None:
        self.seed, self.fold = seed, fold
        self._start_epoch = 0
        self._seeded_epoch: int | None = None

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._start_epoch = int(checkpoint["epoch"]) + 1  # saved at the end of that epoch

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = self._seed_globals(self._start_epoch)  # trainer.current_epoch is restored only later
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "seed"):
            datamodule.seed = seed  # the train loader's generator is created from it

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._seeded_epoch == trainer.current_epoch:
            return  # this fit's first epoch: seeded in on_fit_start, its first batch already drawn
        seed = self._seed_globals(trainer.current_epoch)
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            for generator in {id(g): g for g in _generators(loader)}.values():
                generator.manual_seed(seed)

    def _seed_globals(self, epoch: int) -> int:
        self._seeded_epoch = epoch
        seed = epoch_seed(self.seed, self.fold, epoch)
        pl.seed_everything(seed, workers=True, verbose=False)
        return seed


def _generators(loader) -> list[torch.Generator]:
    """The generators that shuffle ``loader``: its own, its sampler's, and under DDP the one of the sampler that
    Lightning's ``DistributedSamplerWrapper`` wraps (kept at ``.dataset._sampler``)."""
    found = [getattr(loader, "generator", None)]
    sampler = getattr(loader, "sampler", None)
    while sampler is not None:
        found.append(getattr(sampler, "generator", None))
        sampler = getattr(getattr(sampler, "dataset", None), "_sampler", None)
    return [g for g in found if isinstance(g, torch.Generator)]


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` after every epoch, written to a temporary name and renamed.

    A ``Checkpoint`` subclass, so Lightning calls it after the module's and EarlyStopping's epoch-end hooks:
    the saved state includes this epoch's history row and the early-stopping count.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            trainer.save_checkpoint(self.path)  # a collective every rank joins; only rank 0 writes
            return
        with atomic_path(self.path) as tmp:
            trainer.save_checkpoint(tmp)


class MovableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose state survives a moved run folder (a results dir copied to another disk or
    worktree, then resumed).

    Lightning reloads ``best_model_score`` only when the saved ``dirpath`` equals today's; otherwise it warns and
    the next epoch becomes "best" whatever its val_loss, so ``best.ckpt`` could silently disagree with the
    record's ``best_epoch``. Here the saved paths are rebased onto today's folder first. Its state key stays
    ``ModelCheckpoint{...}``, so checkpoints written before this class existed still resume with their state.
    """

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and saved != self.dirpath:
            state_dict = _rebased(state_dict, str(saved), str(self.dirpath))
        super().load_state_dict(state_dict)


def _rebased(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``state`` with every path under ``old`` moved under ``new``."""

    def move(path: Any) -> Any:
        return new + path[len(old) :] if isinstance(path, str) and path.startswith(old) else path

    moved = {key: move(value) for key, value in state.items()}
    moved["dirpath"] = new
    if isinstance(state.get("best_k_models"), dict):
        moved["best_k_models"] = {move(path): score for path, score in state["best_k_models"].items()}
    return moved


def make_resumable(trainer: pl.Trainer, last: Path, seed: int, fold: int) -> pl.Trainer:
    """Add exact-resume callbacks to a built Trainer; its ModelCheckpoint keeps choosing ``best`` only."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.save_last = False
    trainer.callbacks.extend([EpochSeed(seed, fold), LastCheckpoint(last)])
    return trainer


RESUME_KEYS = ("epoch", "global_step", "state_dict", "optimizer_states", "loops")
"""What Lightning's resume reads from a checkpoint: a file without them is no ``last.ckpt`` of ours."""


def read_last(last: Path) -> dict | None:
    """The ``last.ckpt`` a killed fold left, or None. One that cannot be read (a disk fault, a copy cut short) or
    that loads but is no checkpoint is set aside with a warning naming it, and the fold starts again from scratch.

    Loaded weights-only: a file that would run code raises ``UnsafeFile`` (one line) and is left where it is."""
    if not last.is_file():
        return None
    try:
        state = load_weights(last, "resume state")
    except UnsafeFile:
        raise
    except Exception as exc:  # torch's zip reader, pickle and EOF errors alike: none is a checkpoint
        reason = f"cannot be read: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:80]}"
        set_aside(last, reason, "this fold starts again from epoch 1")
        return None
    if reason := _not_a_checkpoint(state):
        set_aside(last, reason, "this fold starts again from epoch 1")
        return None
    return state


def _not_a_checkpoint(state: Any) -> str | None:
    """Why a loaded ``last.ckpt`` cannot resume a fit, or None when it holds what Lightning's resume reads."""
    if not isinstance(state, dict):
        return f"not a checkpoint: it holds a {type(state).__name__}, not a dict"
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        return f"not a checkpoint: no {', '.join(missing)}"
    if not isinstance(state["epoch"], int) or not isinstance(state["state_dict"], dict):
        return "not a checkpoint: its epoch or state_dict is of the wrong type"
    return None


def random_streams() -> dict[str, Any]:
    """The process's random states that a pack's steps draw from (dropout under ``vmap``, on-device augmentation)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_random_streams(streams: dict[str, Any]) -> None:
    torch.set_rng_state(streams["torch"])
    if streams.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(streams["cuda"])
    np.random.set_state(streams["numpy"])
    random.setstate(streams["python"])
