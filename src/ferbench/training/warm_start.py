"""Start a model from another run's weights (``model.init``), optionally with its backbone frozen at first.

Paper 000 trains YOLOX-Nano at batch 4, lr 1e-4 for 100 epochs: the settings of the common YOLOX training script,
which starts from pretrained weights and trains the backbone frozen, then unfrozen. No weights can be downloaded
here, so ferbench pretrains on a data set it holds with its own run, recorded like any other, and a later run
starts from that run's best checkpoint:

* ``model.init=<run id>`` (its fold 0), ``<run id>/fold_<k>``, or a path to a ``.ckpt`` / ``.pt`` file;
* every tensor whose name and shape match is loaded; the rest (a head for another number of classes) keep their
  fresh initialisation, and the run's log says which;
* ``model.freeze_epochs=N`` keeps ``model.backbone``'s parameters fixed for the first N epochs (their gradients
  are not computed, so the optimiser leaves them untouched), then trains everything.

The run id covers the choice: a run id names a recorded experiment, a file is named by its bytes' digest.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ferbench.errors import ConfigError
from ferbench.records import record as rec
from ferbench.records.safe_load import load_weights

log = logging.getLogger("ferbench")


@dataclass
class LoadReport:
    """What ``load_matching`` took from a checkpoint and what it left at its fresh values."""

    source: Path
    loaded: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def line(self) -> str:
        kept = f"; left at their fresh values: {', '.join(self.left[:6])}" if self.left else ""
        more = f" (+{len(self.left) - 6} more)" if len(self.left) > 6 else ""
        return f"model.init: {len(self.loaded)} tensors from {self.source}{kept}{more}"


def init_source(init: str, results_dir: Path) -> Path:
    """The checkpoint file ``model.init`` names: a file, or a run id (fold 0) / ``<run id>/fold_<k>`` under
    ``results_dir/runs``."""
    as_path = Path(init).expanduser()
    if as_path.is_file():
        return as_path
    run_id, _, fold = str(init).partition("/fold_")
    run_dir = rec.run_dir(results_dir, run_id) if rec.is_folder_name(run_id) else None  # never a path elsewhere
    checkpoint = rec.best_checkpoint(run_dir, int(fold or 0)) if run_dir else None
    if checkpoint and checkpoint.is_file():
        return checkpoint
    if run_dir and run_dir.is_dir():
        raise ConfigError(f"model.init={init}: run {run_id} has no best checkpoint at {checkpoint}")
    raise ConfigError(
        f"model.init={init}: neither a file nor a run under {rec.runs_dir(results_dir)} "
        "(give a checkpoint path, a run id, or <run id>/fold_<k>)"
    )


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model's tensors in a Lightning checkpoint (``state_dict`` with ``model.`` keys) or a plain state dict.

    Loaded weights-only (``records.safe_load``): a file that would run code is refused before any of it runs."""
    try:
        state = load_weights(path, "model.init")
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:  # truncated, not torch's, unreadable
        why = f"{type(exc).__name__}: {_first_line(exc)}"
        raise ConfigError(f"model.init: {path} cannot be read as weights ({why})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ConfigError(f"model.init: {path} holds no state dict")
    prefixed = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.") and torch.is_tensor(v)}
    return prefixed or {k: v for k, v in state.items() if torch.is_tensor(v)}


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:120]


def load_matching(model: nn.Module, path: Path) -> LoadReport:
    """Copy into ``model`` every tensor of ``path`` whose name and shape match; a checkpoint sharing none is an
    error (another architecture, not a warm start)."""
    weights = checkpoint_weights(path)
    own = model.state_dict()
    report = LoadReport(path)
    matched = {}
    for name, tensor in own.items():
        theirs = weights.get(name)
        if theirs is not None and theirs.shape == tensor.shape:
            matched[name] = theirs
            report.loaded.append(name)
        else:
            report.left.append(name)
    if not matched:
        raise ConfigError(f"model.init: no tensor of {path} matches this model's names and shapes")
    model.load_state_dict(matched, strict=False)
    return report


def warm_start(model: nn.Module, cfg: Any) -> LoadReport | None:
    """Load ``cfg.model.init`` into ``model`` (None when unset)."""
    init = cfg.model.get("init")
    if not init:
        return None
    report = load_matching(model, init_source(str(init), Path(cfg.results_dir)))
    log.info("%s", report.line())
    return report


class FreezeBackbone(pl.Callback):
    """``model.backbone`` fixed for the first ``epochs`` epochs, trained after (set at each epoch's start, so a
    resumed run freezes exactly as an unbroken one)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        backbone = frozen_part(pl_module.model)
        for param in backbone.parameters():
            param.requires_grad_(trainer.current_epoch >= self.epochs)


def frozen_part(model: nn.Module) -> nn.Module:
    """The module ``model.freeze_epochs`` freezes: the model's ``backbone``."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ConfigError(
            f"model.freeze_epochs needs a model with a `backbone` submodule; {type(model).__name__} has none"
        )
    return backbone


def warm_start_callbacks(cfg: Any, model: nn.Module) -> list[pl.Callback]:
    """The Lightning callbacks ``model.freeze_epochs`` asks for (checked against ``model`` now, not mid-fit)."""
    epochs = int(cfg.model.get("freeze_epochs") or 0)
    if epochs <= 0:
        return []
    frozen_part(model)
    return [FreezeBackbone(epochs)]
