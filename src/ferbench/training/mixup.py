"""Mix-up as a batch transform in the training step (paper 000's YOLOX input stage), labels mixed with the images.

YOLOX blends two images with equal weights; here each training batch, with probability ``p``, becomes
``(1 - ratio) * x + ratio * x[perm]`` and its loss ``(1 - ratio) * L(y) + ratio * L(y[perm])`` (the same as the
cross-entropy with the mixed soft label, and defined for any loss, AM-Softmax included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ferbench.errors import ConfigError


@dataclass(frozen=True)
class MixUp:
    p: float = 0.5
    ratio: float = 0.5


Partner = tuple[torch.Tensor, float] | None
"""The labels an image was blended with and their weight; None for an unmixed batch."""


def no_aug_epochs(aug: Any) -> int:
    """``aug.no_aug_epochs`` (YOLOX's name): the last this many epochs train without mosaic and mix-up, on images
    as they are tested (``aug.train`` still applies). 0 or absent: every epoch mixes."""
    n = int(aug.get("no_aug_epochs") or 0)
    if n < 0:
        raise ConfigError(f"aug.no_aug_epochs must be >= 0, got {n}")
    return n


def mixes(epoch: int, max_epochs: int, no_aug: int) -> bool:
    """Whether epoch ``epoch`` (0-based) of ``max_epochs`` draws mosaics and mix-ups."""
    return epoch < max_epochs - no_aug


def build_mixup(options: Any) -> MixUp | None:
    """``aug.mixup`` (``{p, ratio}``) -> MixUp; absent or ``p: 0`` -> None. A bad value names its key."""
    if not options:
        return None
    mixup = MixUp(**dict(options))
    if not 0 <= mixup.p <= 1 or not 0 < mixup.ratio < 1:
        raise ConfigError(f"aug.mixup: p must be in [0, 1] and ratio in (0, 1), got p={mixup.p}, ratio={mixup.ratio}")
    return mixup if mixup.p > 0 else None


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup: MixUp | None) -> tuple[torch.Tensor, Partner]:
    """Blend each image with another of the batch (a random permutation), with probability ``p`` per batch."""
    if mixup is None or len(y) < 2 or torch.rand(()) >= mixup.p:
        return x, None
    perm = torch.randperm(len(y), device=x.device)
    return torch.lerp(x, x[perm], mixup.ratio), (y[perm], mixup.ratio)


def mixed_loss(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], out: torch.Tensor, y: torch.Tensor, partner: Partner
) -> torch.Tensor:
    """``loss(out, y)``, or its blend with the partner labels' loss by the same weight as the images."""
    if partner is None:
        return loss(out, y)
    other, ratio = partner
    return (1 - ratio) * loss(out, y) + ratio * loss(out, other)
