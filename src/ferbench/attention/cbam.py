"""``cbam``: Convolutional Block Attention Module (Woo et al., ECCV 2018): channel gate, then spatial gate.

Channel (eq. 2): ``sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))`` with one MLP shared by both pools.
Spatial (eq. 3): ``sigmoid(conv_kxk([AvgPool_c; MaxPool_c]))``, k = 7 by default.
Paper 004 Table 1 counts ``2C^2/r + 2k^2`` parameters; that holds exactly with ``bias=False`` (our
default) and without the BatchNorm that Woo et al.'s code puts after the spatial conv (2 more
parameters, and unstable on the 1x1 maps of deep layers), so we leave that BatchNorm out.
The two halves are registered on their own by ``ca``/``sa`` (paper 003) and reused by ``mcbam``.
"""

from __future__ import annotations

import torch
from torch import nn

from ferbench.attention.gate import GatedAttention, PoolOrder, channel_pool
from ferbench.attention.registry import ATTENTION
from ferbench.attention.se import ChannelMLP


class ChannelAttention(GatedAttention):
    """CBAM's channel half (CAM): a shared MLP over the average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        self.mlp = ChannelMLP(channels, reduction, bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + mx)


class SpatialAttention(GatedAttention):
    """CBAM's spatial half: one k x k conv (2 -> 1, 'same' padding) over the channel-pooled maps."""

    def __init__(
        self,
        channels: int = 0,
        kernel_size: int = 7,
        bias: bool = False,
        first: PoolOrder = "avg",
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive to keep the shape, got {kernel_size}")
        self.first = first
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(channel_pool(x, self.first)))


@ATTENTION.register("cbam")
class CBAM(nn.Module):
    """Sequential channel then spatial attention (Woo et al. found this order best, their Table 3)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, bias: bool = False) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, bias)
        self.spatial = SpatialAttention(channels, kernel_size, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
