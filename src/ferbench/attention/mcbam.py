"""``mcbam``: paper 002's (amdcnn) multiscale CBAM: CBAM's channel attention, then a multiscale spatial gate.

Paper 002 eq. 1-2: ``F' = M_CAM(F) * F``, ``F'' = M_MSAM(F') * F'``.
CAM (eq. 3) is CBAM's channel attention. Eq. 3's second line reads ``sigmoid(MLP(avg)) +
sigmoid(MLP(max))``, a gate in [0, 2]; its first line and the paper's "CAM is CBAM's" say
``sigmoid(MLP(avg) + MLP(max))``, Woo et al.'s form, which we use.
MSAM (eq. 5-9): 5x5, 3x3 and 1x1 convs (each 2 -> 1) on ``[avg; max]`` channel pools, the three maps
concatenated (eq. 8) and then "fused" into one map before the sigmoid (eq. 9). The paper does not say
how; we fuse by a 1x1 conv 3 -> 1, the usual reading of "spliced and fused". Biases off, as in CBAM,
so MSAM has ``2(25 + 9 + 1) + 3 = 73`` parameters. The reduction r is not given: CBAM's 16.
"""

from __future__ import annotations

import torch
from torch import nn

from ferbench.attention.cbam import ChannelAttention
from ferbench.attention.gate import GatedAttention, channel_pool
from ferbench.attention.registry import ATTENTION


class MultiScaleSpatialAttention(GatedAttention):
    """MSAM: parallel k x k convs over ``[avg; max]``, their maps fused by a 1x1 conv, sigmoid."""

    def __init__(self, kernel_sizes: tuple[int, ...] = (5, 3, 1), bias: bool = False) -> None:
        super().__init__()
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"MSAM kernel sizes must be odd and positive, got {kernel_sizes}")
        self.branches = nn.ModuleList(nn.Conv2d(2, 1, k, padding=k // 2, bias=bias) for k in kernel_sizes)
        self.fuse = nn.Conv2d(len(kernel_sizes), 1, 1, bias=bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = channel_pool(x, "avg")
        return torch.sigmoid(self.fuse(torch.cat([branch(pooled) for branch in self.branches], dim=1)))


@ATTENTION.register("mcbam")
class MCBAM(nn.Module):
    """CAM then MSAM (paper 002 Fig. 2): ``2C^2/r + 73`` parameters at the defaults."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_sizes: tuple[int, ...] | list[int] = (5, 3, 1),
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, bias)
        self.spatial = MultiScaleSpatialAttention(tuple(kernel_sizes), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
