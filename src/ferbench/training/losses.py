"""Losses by name: ``ce`` (optionally class-weighted) and ``am_softmax`` (paper 002)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferbench.errors import ConfigError
from ferbench.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """sklearn's ``compute_sample_weight('balanced')`` per class: n / (k * n_c); absent classes get 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


@LOSSES.register("ce")
class CrossEntropy(nn.Module):
    """Cross-entropy on logits; ``to_logits`` is the identity."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def to_logits(self, output: torch.Tensor) -> torch.Tensor:
        return output

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, weight=self.weight, label_smoothing=self.label_smoothing)


@LOSSES.register("am_softmax")
class AMSoftmax(nn.Module):
    """Additive-margin softmax (Wang et al. 2018): CE over ``s * (cos - m * onehot)``.

    The model's head outputs cosines (``head: cosine``); ``s`` is learnable when ``learn_scale``.
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        scale: float = 30.0,
        margin: float = 0.35,
        learn_scale: bool = True,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.margin = margin
        log_scale = torch.tensor(float(np.log(scale)))
        self.log_scale = nn.Parameter(log_scale) if learn_scale else nn.Buffer(log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def to_logits(self, cosines: torch.Tensor) -> torch.Tensor:
        """Scaled cosines, without margin: what evaluation ranks and soft-maxes."""
        return self.scale * cosines

    def forward(self, cosines: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # a negative target (a packed evaluation's padding slot) gets no margin and, as in cross_entropy, no loss
        onehot = F.one_hot(target.clamp(min=0), cosines.shape[1]) * (target >= 0).unsqueeze(1)
        margin = onehot.to(cosines.dtype) * self.margin
        return F.cross_entropy(self.scale * (cosines - margin), target, weight=self.weight)


def build_loss(cfg, train_labels: np.ndarray, num_classes: int) -> nn.Module:
    """Loss from its config; ``class_weights: balanced`` weighs by the training part's class counts."""
    options = {k: v for k, v in cfg.items() if k not in ("name", "head", "class_weights", "aux_weight")}
    weight = None
    if cfg.class_weights == "balanced":
        weight = balanced_class_weights(train_labels, num_classes)
    elif cfg.class_weights not in (None, "none"):
        raise ConfigError(f"loss.class_weights must be 'none' or 'balanced', got {cfg.class_weights!r}")
    return LOSSES.get(cfg.name)(weight=weight, **options)
