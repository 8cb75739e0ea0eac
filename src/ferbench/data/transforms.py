"""Augmentation pipelines (albumentations, from ``conf/aug``) and the uint8 -> normalised tensor step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from hydra.utils import instantiate

from ferbench.errors import ConfigError


def build_augmentation(steps: Sequence[Any]) -> A.Compose | None:
    """``aug.train`` (a list of ``_target_`` specs) -> one Compose; an empty list -> None (no work)."""
    if not steps:
        return None
    try:
        return A.Compose([instantiate(step) for step in steps])
    except Exception as exc:  # hydra wraps import and argument errors alike
        raise ConfigError(f"aug.train could not be built: {exc}") from None


def to_tensor(images: np.ndarray | torch.Tensor, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """uint8 N x H x W x C (or H x W x C) -> float N x C x H x W (or C x H x W), ``(x/255 - mean)/std``."""
    tensor = torch.as_tensor(images)
    tensor = tensor.movedim(-1, -3).float().div_(255.0)
    return tensor.sub_(mean).div_(std)
