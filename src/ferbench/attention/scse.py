"""``scse``: concurrent spatial and channel squeeze & excitation (Roy et al., MICCAI 2018).

cSE: an SE channel gate (``se``) with Roy et al.'s reduction r = 2 and biased FC layers, as in their
reference code. sSE: ``sigmoid(conv_1x1(x))``, a C -> 1 projection (with bias), one weight per pixel.
Roy et al.'s MICCAI paper combines the two recalibrated maps by element-wise addition, so
``combine="sum"`` is the default; their later journal version (IEEE TMI 2019) found max-out a little
better, available as ``combine="max"``. Paper 001 compares against it in Table 4.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ferbench.attention.gate import GatedAttention
from ferbench.attention.registry import ATTENTION
from ferbench.attention.se import SE

Combine = Literal["sum", "max"]


class SpatialSE(GatedAttention):
    """sSE: channel squeeze by a 1x1 conv, spatial excitation by a sigmoid."""

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1, bias=bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


@ATTENTION.register("scse")
class SCSE(nn.Module):
    """cSE and sSE on the same input; their outputs summed (default) or max-ed."""

    def __init__(
        self,
        channels: int,
        reduction: int = 2,
        bias: bool = True,
        combine: Combine = "sum",
    ) -> None:
        super().__init__()
        if combine not in ("sum", "max"):
            raise ValueError(f"scse combine must be 'sum' or 'max', got {combine!r}")
        self.combine = combine
        self.cse = SE(channels, reduction, bias)
        self.sse = SpatialSE(channels, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.cse(x), self.sse(x)
        return c + s if self.combine == "sum" else torch.maximum(c, s)
