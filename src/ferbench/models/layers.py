"""Layers every model builds from: ``ConvNormAct`` (timm's shape) and the GroupNorm that stands in for BatchNorm."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from torch import nn

NormLayer = Callable[[int], nn.Module]
"""Channels -> a norm module: ``nn.BatchNorm2d``, ``group_norm``, or a ``partial`` of one."""
ActLayer = Callable[[], nn.Module]
"""() -> an activation module: ``nn.Hardswish``, or ``partial(nn.SiLU, inplace=True)``."""

GN_GROUPS = 8
"""GroupNorm's groups where a model swaps BatchNorm for it (mnv3simam's ``gn_groups``, yoloxnano's ``norm: gn``):
8 divides every width of MobileNetV3-Large (16, 24, ..., 184, 200, ...) and is their greatest common divisor."""

inplace_relu: ActLayer = partial(nn.ReLU, inplace=True)


def group_norm(channels: int, groups: int = GN_GROUPS, eps: float = 1e-5) -> nn.GroupNorm:
    """``GroupNorm`` taking the channel count first, like ``BatchNorm2d``; groups shrink to divide it."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=eps)


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, as children ``0``, ``1``, ``2``; a norm or act of ``None`` is left out.

    The norm and the activation are factories passed in (timm's ``ConvNormAct``), never chosen by name. The conv
    has no bias by default (the norm's shift takes its place); ``padding`` defaults to "same" for odd kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer | None = inplace_relu,
    ) -> None:
        pad = dilation * (kernel_size // 2) if padding is None else padding
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation, groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)
