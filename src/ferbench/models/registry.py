"""The model registry: ``create_model(name, num_classes=, in_chans=, attn_layer=, **switches)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ferbench.registry import Registry

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("model")


def create_model(name: str, *, num_classes: int, in_chans: int, **kwargs: object) -> nn.Module:
    """Build a registered model; every builder takes ``num_classes`` and ``in_chans`` as keywords."""
    return MODELS.get(name)(num_classes=num_classes, in_chans=in_chans, **kwargs)
