"""The attention registry: every mechanism is ``Module(channels, **kwargs)`` returning the input's shape."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ferbench.registry import Registry

AttnFactory = Callable[[int], nn.Module]
"""What a model receives: call it with a channel count, get a module that keeps the shape."""

ATTENTION: Registry[type[nn.Module]] = Registry("attention")


class NoAttention(nn.Identity):
    """``attn=none``: the identity, taking (and ignoring) the channel count like every other module."""

    def __init__(self, channels: int = 0, **_: object) -> None:
        super().__init__()


ATTENTION.register("none")(NoAttention)


def attention_factory(name: str, **kwargs: object) -> AttnFactory:
    """``attention_factory("eca", gamma=2)`` -> ``channels -> ECA(channels, gamma=2)``."""
    return partial(ATTENTION.get(name), **kwargs)
