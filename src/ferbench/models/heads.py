"""Classifier heads, chosen by the loss: ``linear`` for cross-entropy, ``cosine`` for AM-Softmax."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ferbench.registry import Registry

HeadFactory = Callable[[int, int], nn.Module]
"""``head_layer(in_features, num_classes)`` -> a module mapping (N, in_features) to (N, num_classes)."""

HEADS: Registry[HeadFactory] = Registry("head")


@HEADS.register("linear")
class LinearHead(nn.Linear):
    """Plain logits."""


@HEADS.register("cosine")
class CosineHead(nn.Module):
    """Cosine similarity between the normalised feature and normalised class weights, in [-1, 1].

    AM-Softmax subtracts its margin from the true class's cosine and scales; argmax is unchanged.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
