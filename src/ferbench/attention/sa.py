"""``sa``: paper 003's (shufflecsp) spatial attention, applied to the 8-channel stem output.

Paper 003 gives no formula, only Table 1: SA on 8 channels has 19 parameters. CBAM's spatial gate
(a conv 2 -> 1 over ``[avg; max]`` channel pools) with a 3x3 kernel and a bias has exactly
``2 * 3^2 + 1 = 19`` and no dependence on C, so that is what we build.
Paper 001's "SA" (its Table 3) is a different module: see ``csa_spatial``.
"""

from __future__ import annotations

from ferbench.attention.cbam import SpatialAttention
from ferbench.attention.registry import ATTENTION


@ATTENTION.register("sa")
class PaperSA(SpatialAttention):
    """CBAM spatial attention with paper 003's defaults (3x3, with bias): 19 parameters for any C."""

    def __init__(self, channels: int = 0, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__(channels, kernel_size, bias)
