"""Attention modules, one file per mechanism, all registered in ``ATTENTION``.

Importing this package imports every module file so that the registry is full.
Registry names: ``none``; ``se``, ``eca``, ``cbam``, ``scse`` (the classics papers 000, 001 and 004
compare against); ``csa``, ``csa_channel``, ``csa_spatial`` (paper 001, Table 3's CSA, CA and SA);
``mcbam`` (paper 002); ``sa``, ``ca`` (paper 003's Table 1 modules); ``simam`` (paper 004).
"""

from ferbench.attention.ca import PaperCA
from ferbench.attention.cbam import CBAM, ChannelAttention, SpatialAttention
from ferbench.attention.csa import CSA, CSASpatial
from ferbench.attention.eca import ECA, eca_kernel_size
from ferbench.attention.gate import GatedAttention
from ferbench.attention.mcbam import MCBAM, MultiScaleSpatialAttention
from ferbench.attention.registry import ATTENTION, AttnFactory, NoAttention, attention_factory
from ferbench.attention.sa import PaperSA
from ferbench.attention.scse import SCSE, SpatialSE
from ferbench.attention.se import SE
from ferbench.attention.simam import SimAM

__all__ = [
    "ATTENTION",
    "CBAM",
    "CSA",
    "ECA",
    "MCBAM",
    "SCSE",
    "SE",
    "AttnFactory",
    "CSASpatial",
    "ChannelAttention",
    "GatedAttention",
    "MultiScaleSpatialAttention",
    "NoAttention",
    "PaperCA",
    "PaperSA",
    "SimAM",
    "SpatialAttention",
    "SpatialSE",
    "attention_factory",
    "eca_kernel_size",
]
