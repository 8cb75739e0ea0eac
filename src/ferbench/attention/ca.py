"""``ca``: paper 003's (shufflecsp) channel attention, placed after the last CSP block.

Paper 003 gives no formula, only Table 1: CA on 512 channels has 262,144 = 512^2 parameters. A
bias-free CBAM channel gate (shared MLP over avg- and max-pooled vectors) with reduction r = 2 has
exactly ``2C^2/r = C^2``; we take that reading because the paper's SA matches CBAM's spatial half
(see ``sa``). A bias-free SE with r = 2 would have the same count, so the pooling is our choice.
Paper 001's "CA" (its Table 3) is a different module: see ``csa_channel``.
"""

from __future__ import annotations

from ferbench.attention.cbam import ChannelAttention
from ferbench.attention.registry import ATTENTION


@ATTENTION.register("ca")
class PaperCA(ChannelAttention):
    """CBAM channel attention with paper 003's defaults (r = 2, no bias): ``C^2`` parameters."""

    def __init__(self, channels: int, reduction: int = 2, bias: bool = False) -> None:
        super().__init__(channels, reduction, bias)
