"""Light VGG16 (paper 001, Sec. 2.2): VGG16's 13 convs made depthwise-separable, GAP instead of the FC layers.

The attention block (CSA in the paper, any registered one here) goes after each conv, before each pooling
or after each pooling: Table 2's three positions.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from ferbench.attention import AttnFactory, NoAttention
from ferbench.errors import ConfigError
from ferbench.models.heads import HeadFactory, LinearHead
from ferbench.models.layers import ConvNormAct
from ferbench.models.registry import MODELS

AttnPosition = Literal["after_conv", "before_pool", "after_pool"]
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1 (Sec. 2.2.1, Figs. 4-5), each with BN and ReLU.

    The two ConvNormActs' layers sit flat in one Sequential (children 0-5), as recorded runs' state dicts have them.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(*ConvNormAct(c_in, c_in, 3, groups=c_in), *ConvNormAct(c_in, c_out, 1))


class StandardConv(ConvNormAct):
    """A plain 3x3 conv: the first layer, where a depthwise conv over 1-3 channels learns almost nothing."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 3)


def stage(convs: list[nn.Module], c_out: int, attn_layer: AttnFactory, position: AttnPosition) -> list[nn.Module]:
    """One VGG stage with the attention block at ``position``; pooling is 2x2 max."""
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, attn_layer(c_out)] if position == "after_conv" else [conv]
    if position == "before_pool":
        layers.append(attn_layer(c_out))
    layers.append(nn.MaxPool2d(2))
    if position == "after_pool":
        layers.append(attn_layer(c_out))
    return layers


class LightVGG(nn.Module):
    """13 (separable) convs in VGG16's five stages, then GAP -> dropout -> head."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        attn_layer: AttnFactory = NoAttention,
        head_layer: HeadFactory = LinearHead,
        attn_position: AttnPosition = "before_pool",
        first_conv_separable: bool = False,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        if attn_position not in get_args(AttnPosition):
            raise ConfigError(
                f"model.attn_position: '{attn_position}'; choose from: {', '.join(get_args(AttnPosition))}"
            )
        first = SeparableConv if first_conv_separable else StandardConv
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, widths in enumerate(VGG16_STAGES):
            convs = [(first if i == 0 else SeparableConv)(c_in, widths[0])]
            convs += [SeparableConv(c, c) for c in widths[1:]]
            layers += stage(convs, widths[-1], attn_layer, attn_position)
            c_in = widths[-1]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate), head_layer(c_in, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("lightvgg")
def lightvgg(num_classes: int, in_chans: int = 1, **kwargs) -> LightVGG:
    return LightVGG(num_classes=num_classes, in_chans=in_chans, **kwargs)
