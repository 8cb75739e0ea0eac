"""What a pack is made of: each member's unit (model and loss as one module), its fold and state, and the settings
the pack shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import torch
from torch import nn

from ferbench.data.splits import Fold
from ferbench.training.rules import StoppingRule


class PackNet(nn.Module):
    """One model and its loss as one module: the unit ``torch.func`` stacks (the loss may learn, AM-Softmax's
    scale; its class weights differ per fold). Named ``model``/``loss`` like FERModule, so state dicts match."""

    def __init__(self, model: nn.Module, loss: nn.Module, aux_weight: float = 1.0) -> None:
        super().__init__()
        self.model, self.loss, self.aux_weight = model, loss, aux_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: (loss with auxiliary terms, correct count). Evaluation: (batch-mean loss, logits)."""
        if train and hasattr(self.model, "forward_with_aux"):
            out, aux = self.model.forward_with_aux(x)
        else:
            out, aux = self.model(x), []
        loss = self.loss(out, y)
        if not train:
            return loss, self.loss.to_logits(out)
        for a in aux:
            loss = loss + self.aux_weight * self.loss(a, y)
        return loss, (out.argmax(dim=1) == y).sum().to(loss.dtype)


@dataclass
class Member:
    """One model of a pack: a fold of a run, with everything its solo run would be given."""

    name: str  # "<run_id> fold k", for messages
    seed: int
    fold: Fold
    net: PackNet  # freshly built after seeding with ``seed``
    augment: A.Compose | None  # its own instance: albumentations is re-seeded per batch
    checkpoint_dir: Path
    logger: Any = None  # its fold's live view (``logger`` config group), or None


@dataclass
class MemberResult:
    stopping: StoppingRule  # its early stopping and best epoch
    history: list[dict[str, float]] = field(default_factory=list)
    test_results: dict[str, torch.Tensor] = field(default_factory=dict)
    test_probs: torch.Tensor | None = None
    failure: str | None = None
    failed_epoch: int | None = None
    resumed: bool = False
    test_seconds: float = 0.0

    @property
    def best_epoch(self) -> int:
        return self.stopping.best_epoch


@dataclass
class PackSettings:
    """What a pack shares: the trainer and optimiser settings (identical across its runs by construction)."""

    optim: Any
    max_epochs: int
    batch_size: int
    patience: int
    num_classes: int
    device: torch.device
    min_delta: float = 0.0
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    gpu_augment: bool = False
    progress: Callable[[str], None] | None = None


def packable(members: Sequence[Member], batch_size: int) -> tuple[list[Member], list[Member]]:
    """(pack, solo): a model whose training part fits in one batch trains alone (see module docstring)."""
    pack = [m for m in members if len(m.fold.train) > batch_size]
    return pack, [m for m in members if len(m.fold.train) <= batch_size]
