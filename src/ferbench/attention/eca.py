"""``eca``: Efficient Channel Attention (Wang et al., CVPR 2020), paper 001's channel branch.

``sigmoid(conv1d_k(GAP(x)))`` over the channel axis: no dimensionality reduction, k parameters.
k adapts to C (ECA eq. 12, paper 001 eq. 4): ``k = |log2(C)/gamma + b/gamma|_odd``, gamma = 2, b = 1.
"Nearest odd" is taken as ECA's reference code does it (truncate, then add 1 if even), which agrees
with the nearest odd number except at exact even integers, where it rounds up (C = 128 -> 5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ferbench.attention.gate import GatedAttention
from ferbench.attention.registry import ATTENTION


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel: 3 for C = 8..64 and 5 for C = 128..1024 at the defaults."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@ATTENTION.register("eca")
@ATTENTION.register("csa_channel")
class ECA(GatedAttention):
    """ECA channel gate. Also ``csa_channel``: paper 001's "Base+CA" (Table 3) is CSA's ECA branch alone.

    ``kernel_size`` overrides the adaptive k when given.
    """

    def __init__(self, channels: int, gamma: float = 2, b: float = 1, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size if kernel_size is not None else eca_kernel_size(channels, gamma, b)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA kernel_size must be odd and positive, got {k}")
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3)).unsqueeze(1)  # (N, 1, C): channels as a 1-D sequence
        return torch.sigmoid(self.conv(y)).transpose(1, 2).unsqueeze(-1)  # (N, C, 1, 1)
