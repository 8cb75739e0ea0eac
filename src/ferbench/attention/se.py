"""``se``: Squeeze-and-Excitation (Hu et al., CVPR 2018), the channel gate paper 004 replaces by SimAM.

``sigmoid(W1 relu(W0 GAP(x)))`` with ``W0: C -> C/r``, ``W1: C/r -> C``. Paper 004 Table 1 counts
its parameters as ``2C^2/r``, which holds exactly with ``bias=False`` (our default); Hu et al.'s
own FC layers carry biases, ``bias=True`` adds those ``C/r + C``. Papers 000 and 001 (Table 4)
compare against it with r = 16, Hu et al.'s default.
"""

from __future__ import annotations

import torch
from torch import nn

from ferbench.attention.gate import GatedAttention, hidden_channels
from ferbench.attention.registry import ATTENTION


class ChannelMLP(nn.Module):
    """The two-layer bottleneck ``C -> C/r -> C`` (1x1 convs) applied to pooled (N, C, 1, 1) vectors."""

    def __init__(self, channels: int, reduction: int, bias: bool) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


@ATTENTION.register("se")
class SE(GatedAttention):
    """Channel gate from global average pooling; ``2C^2/r`` parameters with the default ``bias=False``."""

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        self.mlp = ChannelMLP(channels, reduction, bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True)))
