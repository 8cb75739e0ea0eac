"""Attention modules, one file per mechanism, all registered in ``ATTENTION``.

Importing this package imports every module file so that the registry is full.
"""

from ferbench.attention.registry import ATTENTION, AttnFactory, NoAttention, attention_factory

__all__ = ["ATTENTION", "AttnFactory", "NoAttention", "attention_factory"]
