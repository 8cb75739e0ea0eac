"""A small plain CNN: the default model, trains in a minute on a laptop CPU."""

from __future__ import annotations

import torch
from torch import nn

from ferbench.attention import AttnFactory, NoAttention
from ferbench.models.heads import HeadFactory, LinearHead
from ferbench.models.layers import ConvNormAct, NormLayer
from ferbench.models.registry import MODELS


class ConvBlock(nn.Sequential):
    """conv3x3 -> norm -> ReLU -> attention -> 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, attn_layer: AttnFactory, norm_layer: NormLayer) -> None:
        # flat (children 0-4), so the state-dict keys of recorded runs stay
        super().__init__(*ConvNormAct(c_in, c_out, 3, norm_layer=norm_layer), attn_layer(c_out), nn.MaxPool2d(2))


class SimpleCNN(nn.Module):
    """Four conv blocks and a global-average-pool head; any input size of at least 16 pixels."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        attn_layer: AttnFactory = NoAttention,
        norm_layer: NormLayer = nn.BatchNorm2d,
        head_layer: HeadFactory = LinearHead,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        chans = [in_chans, *widths]
        self.features = nn.Sequential(
            *(ConvBlock(a, b, attn_layer, norm_layer) for a, b in zip(chans[:-1], chans[1:], strict=True))
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate), head_layer(widths[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("simplecnn")
def simplecnn(num_classes: int, in_chans: int = 1, widths: list[int] | None = None, **kwargs) -> SimpleCNN:
    return SimpleCNN(num_classes=num_classes, in_chans=in_chans, widths=tuple(widths or (32, 64, 128, 256)), **kwargs)
