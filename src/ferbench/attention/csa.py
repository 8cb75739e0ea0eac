"""``csa``: paper 001's (lightvgg) parallel channel + spatial attention; ``csa_spatial``: its spatial branch.

Paper 001, eq. 1-3, improving scSE (Roy et al. 2018): ``M(F) = F * M_c(F) + F * M_s(F)``, the
element-wise sum of the two recalibrated feature maps (equal to ``F * (M_c + M_s)``), with
``M_c = sigmoid(Conv1D_k(GAP(F)))`` (ECA, ``eca``) and ``M_s = sigmoid(Conv_1x1([GMP_c(F); GAP_c(F)]))``.
The paper does not say whether its 1x1 conv has a bias; we give it one, as scSE's spatial conv has
(``bias=False`` leaves the two weights). Paper 001 Table 3's ablation names map to the registry:
Base+CA -> ``csa_channel`` (= ECA), Base+SA -> ``csa_spatial``, Base+CSA -> ``csa``.
"""

from __future__ import annotations

import torch

from ferbench.attention.cbam import SpatialAttention
from ferbench.attention.eca import ECA
from ferbench.attention.gate import GatedAttention
from ferbench.attention.registry import ATTENTION


@ATTENTION.register("csa_spatial")
class CSASpatial(SpatialAttention):
    """Paper 001 eq. 2: a 1x1 conv over ``[channel-max; channel-mean]``, sigmoid; 3 parameters for any C."""

    def __init__(self, channels: int = 0, kernel_size: int = 1, bias: bool = True) -> None:
        super().__init__(channels, kernel_size, bias, first="max")


@ATTENTION.register("csa")
class CSA(GatedAttention):
    """Channel (ECA) and spatial branches in parallel, their recalibrated features summed (eq. 1)."""

    def __init__(
        self,
        channels: int,
        gamma: float = 2,
        b: float = 1,
        eca_kernel_size: int | None = None,
        spatial_kernel_size: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.channel = ECA(channels, gamma, b, eca_kernel_size)
        self.spatial = CSASpatial(channels, spatial_kernel_size, bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel.gate(x) + self.spatial.gate(x)  # x*Mc + x*Ms = x*(Mc + Ms)
