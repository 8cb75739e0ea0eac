"""What most attention modules share: compute a sigmoid gate from ``x``, return ``x * gate``.

Keeping ``gate`` separate from ``forward`` lets composite modules (CBAM, CSA, scSE, MCBAM) reuse a
branch's weights without its multiplication, so no mechanism is written twice.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PoolOrder = Literal["avg", "max"]
"""Which channel pool comes first in the stacked (N, 2, H, W) map."""


class GatedAttention(nn.Module):
    """Base of the gating mechanisms: ``forward(x) = x * gate(x)``, the gate broadcastable to ``x``."""

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def channel_pool(x: torch.Tensor, first: PoolOrder = "avg") -> torch.Tensor:
    """(N, C, H, W) -> (N, 2, H, W): mean and max over channels, the input of every spatial gate here.

    CBAM (Woo et al. 2018, eq. 3) stacks ``[avg; max]``; paper 001 (eq. 2) stacks ``[max; mean]``.
    The order only permutes the next conv's weights, but we keep each paper's order.
    """
    avg, mx = x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    return torch.cat((avg, mx) if first == "avg" else (mx, avg), dim=1)


def hidden_channels(channels: int, reduction: int) -> int:
    """Bottleneck width ``C / r`` of an SE-style MLP, at least 1 so that small layers (C < r) still work."""
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    return max(channels // reduction, 1)
