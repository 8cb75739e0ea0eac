"""MobileNetV3-Large as paper 004 modifies it (Table 2): dilated first conv, dilated (+ max-pooled) shortcuts,
attention where MobileNetV3 has SE (SimAM in the paper), GroupNorm instead of BatchNorm.

Every change is a switch, so Table 4's five variants (base, first-conv, shortcut, first-conv + shortcut,
+ maxpool) and the SE -> SimAM and BN -> GN swaps are configs of this one network.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from ferbench.attention import AttnFactory, NoAttention
from ferbench.errors import ConfigError
from ferbench.models.heads import HeadFactory, LinearHead
from ferbench.models.layers import GN_GROUPS, ConvNormAct, NormLayer, group_norm
from ferbench.models.registry import MODELS


class BlockSpec(NamedTuple):
    kernel: int
    expand: int
    out: int
    attn: bool
    act: type[nn.Module]
    stride: int


RE, HS = nn.ReLU, nn.Hardswish
# Paper 004 Table 2, read by its own s column: stride 2 at blocks 2, 4, 7 and 14 (MobileNetV3-Large, Howard et al.
# 2019, has it at 13, and Table 2's Input column, 14^2 -> 7^2 at block 13, follows that). The "dilation = 2" markers
# agree with the s column, not the Input column: every stride-1 block carries one (1, 3, 5, 6, 8-13, 15) and no
# stride-2 block does, so blocks 11 (80 -> 112) and 13 (112 -> 160) get a dilated shortcut too: one that changes
# width (``shortcut``: the dilated depthwise conv, then a 1x1 projection). Sec. 3: "dilated convolutions and
# max-pooling ... to the shortcut connections of each inverted residual structure". The final map is 7x7 either way.
LARGE = (
    BlockSpec(3, 16, 16, False, RE, 1),
    BlockSpec(3, 64, 24, False, RE, 2),
    BlockSpec(3, 72, 24, False, RE, 1),
    BlockSpec(5, 72, 40, True, RE, 2),
    BlockSpec(5, 120, 40, True, RE, 1),
    BlockSpec(5, 120, 40, True, RE, 1),
    BlockSpec(3, 240, 80, False, HS, 2),
    BlockSpec(3, 200, 80, False, HS, 1),
    BlockSpec(3, 184, 80, False, HS, 1),
    BlockSpec(3, 184, 80, False, HS, 1),
    BlockSpec(3, 480, 112, True, HS, 1),
    BlockSpec(3, 672, 112, True, HS, 1),
    BlockSpec(5, 672, 160, True, HS, 1),
    BlockSpec(5, 960, 160, True, HS, 2),
    BlockSpec(5, 960, 160, True, HS, 1),
)
STEM, LAST, HEAD = 16, 960, 1280
NORMS: dict[str, NormLayer] = {"bn": nn.BatchNorm2d, "gn": group_norm}


def shortcut(c_in: int, c_out: int, norm_layer: NormLayer, dilation: int, maxpool: bool) -> nn.Module:
    """The inverted residual's shortcut: identity (MobileNetV3), or paper 004's dilated depthwise 3x3 conv
    (Sec. 2.1: more receptive field, no resolution lost), optionally then a 3x3 stride-1 max-pool; where the
    block changes width (a stride-1 block with a dilation marker, Table 2), a 1x1 projection to ``c_out`` ends it."""
    layers: list[nn.Module] = []
    if dilation > 1:
        layers.append(ConvNormAct(c_in, c_in, 3, dilation=dilation, groups=c_in, norm_layer=norm_layer, act_layer=None))
    if maxpool:
        layers.append(nn.MaxPool2d(3, stride=1, padding=1))
    if c_out != c_in:
        layers.append(ConvNormAct(c_in, c_out, 1, norm_layer=norm_layer, act_layer=None))
    return nn.Sequential(*layers) if layers else nn.Identity()


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise kxk -> attention -> project 1x1; shortcut where stride 1 and widths agree."""

    def __init__(
        self, c_in: int, spec: BlockSpec, attn_layer: AttnFactory, norm_layer: NormLayer,
        shortcut_dilation: int = 1, shortcut_maxpool: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        mid = spec.expand
        expand = [ConvNormAct(c_in, mid, 1, norm_layer=norm_layer, act_layer=spec.act)] if mid != c_in else []
        self.body = nn.Sequential(
            *expand,
            ConvNormAct(mid, mid, spec.kernel, spec.stride, groups=mid, norm_layer=norm_layer, act_layer=spec.act),
            attn_layer(mid) if spec.attn else nn.Identity(),
            ConvNormAct(mid, spec.out, 1, norm_layer=norm_layer, act_layer=None),
        )
        # MobileNetV3: a shortcut where stride 1 and widths agree; paper 004: every stride-1 block's dilated one
        residual = spec.stride == 1 and (c_in == spec.out or shortcut_dilation > 1)
        self.shortcut = shortcut(c_in, spec.out, norm_layer, shortcut_dilation, shortcut_maxpool) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y + self.shortcut(x) if self.shortcut is not None else y


class MobileNetV3SimAM(nn.Module):
    """Stem -> 15 inverted residuals -> 1x1 to 960 -> GAP -> 1x1 to 1280, h-swish -> dropout -> head."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        attn_layer: AttnFactory = NoAttention,
        head_layer: HeadFactory = LinearHead,
        norm_layer: NormLayer = nn.BatchNorm2d,
        first_conv_dilation: int = 1,
        shortcut_dilation: int = 1,
        shortcut_maxpool: bool = False,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        self.stem = ConvNormAct(in_chans, STEM, 3, 2, dilation=first_conv_dilation, norm_layer=norm_layer, act_layer=HS)
        blocks, c = [], STEM
        for spec in LARGE:
            blocks.append(InvertedResidual(c, spec, attn_layer, norm_layer, shortcut_dilation, shortcut_maxpool))
            c = spec.out
        self.blocks = nn.Sequential(*blocks, ConvNormAct(c, LAST, 1, norm_layer=norm_layer, act_layer=HS))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Sequential(nn.Conv2d(LAST, HEAD, 1), HS(), nn.Flatten(), nn.Dropout(drop_rate))
        self.head = head_layer(HEAD, num_classes)
        init_as_mobilenetv3(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_head(self.pool(self.blocks(self.stem(x)))))


def init_as_mobilenetv3(model: nn.Module) -> None:
    """torchvision's MobileNetV3 init (the PyTorch network paper 004 modified), but for one layer: Kaiming-normal
    fan-out convolutions, unit norms, N(0, 0.01) linear layers. ``conv_head``'s 960 -> 1280 layer is a 1x1
    convolution here (a Linear with N(0, 0.01) in torchvision), so it gets Kaiming-normal fan-out; only a
    ``LinearHead`` classifier is N(0, 0.01) (a ``CosineHead`` keeps its own init). torch's defaults
    (Kaiming-uniform with a = sqrt(5), ~0.65x the scale) left the paper's SGD lr 1e-4 barely moving: training
    accuracy 0.14 -> 0.21 in 264 steps against 0.13 -> 0.70 (synthetic faces, 64 px; issue 14)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def dilation_rate(value: bool | int, key: str) -> int:
    """``true`` means the paper's rate 2, ``false`` no dilation; an integer is the rate itself."""
    if isinstance(value, bool):
        return 2 if value else 1
    if isinstance(value, int) and value >= 1:
        return value
    raise ConfigError(f"model.{key}: {value!r}; expected true/false or a dilation rate >= 1")


@MODELS.register("mnv3simam")
def mnv3simam(
    num_classes: int,
    in_chans: int = 3,
    norm: str = "bn",
    gn_groups: int = GN_GROUPS,
    first_conv_dilation: bool | int = False,
    shortcut_dilation: bool | int = False,
    **kwargs,
) -> MobileNetV3SimAM:
    """``norm``: ``bn`` or ``gn`` (GroupNorm, ``gn_groups`` groups, 8 by default)."""
    if norm not in NORMS:
        raise ConfigError(f"model.norm: '{norm}'; choose from: {', '.join(NORMS)}")
    norm_layer = partial(group_norm, groups=gn_groups) if norm == "gn" else NORMS[norm]
    return MobileNetV3SimAM(
        num_classes=num_classes,
        in_chans=in_chans,
        norm_layer=norm_layer,
        first_conv_dilation=dilation_rate(first_conv_dilation, "first_conv_dilation"),
        shortcut_dilation=dilation_rate(shortcut_dilation, "shortcut_dilation"),
        **kwargs,
    )
