"""``simam``: SimAM (Yang et al., ICML 2021), the parameter-free attention paper 004 puts in place of SE.

Each neuron's importance is the inverse of its minimal energy (paper 004 eq. 6),
``1/e* = (t - mu)^2 / (4 (sigma^2 + lambda)) + 1/2``, with mu and sigma^2 the mean and variance of
its channel over the other ``M - 1 = HW - 1`` positions; the output is ``x * sigmoid(1/e*)``.
lambda (``e_lambda``) = 1e-4 as in Yang et al. No parameters (paper 004 Table 1). On a 1x1 map
``M - 1 = 0``: we divide by at least 1 there, which gives every neuron the neutral weight ``sigmoid(1/2)``.
"""

from __future__ import annotations

import torch

from ferbench.attention.gate import GatedAttention
from ferbench.attention.registry import ATTENTION


@ATTENTION.register("simam")
class SimAM(GatedAttention):
    """3-D (channel and spatial) weights from an energy function; 0 parameters."""

    def __init__(self, channels: int = 0, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        v = d.sum(dim=(2, 3), keepdim=True) / n
        return torch.sigmoid(d / (4 * (v + self.e_lambda)) + 0.5)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
