"""YOLOX-Nano (paper 000) in classification form: CSPDarknet + PAFPN, attention between them, GAP head.

Paper 000, Sec. 3.3: the attention block (SE or CBAM) enhances each backbone output before the FPN. The
detection head is replaced by a classifier on the three PAFPN outputs (SPEC: the classification form
comes first). Layer layout follows Megvii's YOLOX (depth 0.33, width 0.25, depthwise convs, SiLU, BN
eps 1e-3 / momentum 0.03), written compactly here since no yolox package is available.

``norm``: ``bn`` is YOLOX's BatchNorm; ``gn`` swaps every BatchNorm for GroupNorm (``group_norm_like``). At the
paper's batch of 4 from scratch, the BatchNorm network learns far more slowly: memorising 64 synthetic faces at
256 px (Adam 1e-4, batch 4, no augmentation, two seeds), GroupNorm's training accuracy was 0.73-0.77 at epoch 5 and
1.00 from epoch 8-11; BatchNorm's 0.11-0.19 at epoch 5, 0.22-0.33 at epoch 15, 0.47 (loss 1.34) at epoch 30.
Every image's features are normalised with three others', a different three each step, through 77 BatchNorm
layers. YOLOX itself trains at batch 64-128 or fine-tunes COCO weights (none can be downloaded here); so
``conf/model/yoloxnano.yaml`` defaults to ``gn`` and says so, and ``model.norm=bn`` gives YOLOX's layers back.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ferbench.attention import AttnFactory, NoAttention
from ferbench.errors import ConfigError
from ferbench.models.heads import HeadFactory, LinearHead
from ferbench.models.layers import GN_GROUPS, ConvNormAct, group_norm
from ferbench.models.registry import MODELS

DEPTH, WIDTH = 0.33, 0.25
NORMS = ("bn", "gn")
YOLOX_BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)
YOLOX_ACT = partial(nn.SiLU, inplace=True)


def group_norm_like(module: nn.Module, groups: int = GN_GROUPS) -> nn.Module:
    """Every ``BatchNorm2d`` inside ``module`` replaced, in place, by a GroupNorm of the same width and eps.

    Groups shrink to divide the width (16-channel layers get 8 groups of 2). Composes with any network built of
    BatchNorm layers: the detector's backbone and PAFPN can take it as they are.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            width = child.num_features
            setattr(module, name, group_norm(width, groups, eps=child.eps))
        else:
            group_norm_like(child, groups)
    return module


def apply_norm(norm: str, *parts: nn.Module) -> None:
    """``model.norm`` for both forms: ``bn`` keeps YOLOX's BatchNorm, ``gn`` swaps it in ``parts`` for GroupNorm;
    anything else is a one-line error naming the key."""
    if norm not in NORMS:
        raise ConfigError(f"model.norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if norm == "gn":
        for part in parts:
            group_norm_like(part)


class BaseConv(ConvNormAct):
    """Conv -> BN -> SiLU, "same" padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        pad = (kernel - 1) // 2
        super().__init__(c_in, c_out, kernel, stride, pad, groups=groups, norm_layer=YOLOX_BN, act_layer=YOLOX_ACT)


class DWConv(nn.Sequential):
    """Depthwise kxk then pointwise 1x1, each a BaseConv (YOLOX-Nano's ``depthwise=True``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(BaseConv(c_in, c_in, kernel, stride, groups=c_in), BaseConv(c_in, c_out))


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = BaseConv(c_in, c_out), DWConv(c_out, c_out)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.add else y


class CSPLayer(nn.Module):
    """Cross-stage partial layer: half the width through n bottlenecks, half straight, then fused by 1x1."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool = True) -> None:
        super().__init__()
        hidden = c_out // 2
        self.conv1, self.conv2 = BaseConv(c_in, hidden), BaseConv(c_in, hidden)
        self.conv3 = BaseConv(2 * hidden, c_out)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat([self.m(self.conv1(x)), self.conv2(x)], dim=1))


class Focus(nn.Module):
    """Space-to-depth (4 pixel phases stacked as channels), then a 3x3 conv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = BaseConv(4 * c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]]
        return self.conv(torch.cat(phases, dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling (max-pools 5, 9, 13) between two 1x1 convs."""

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c_in // 2
        self.conv1 = BaseConv(c_in, hidden)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = BaseConv(hidden * (len(kernels) + 1), c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(p(x) for p in self.pools)], dim=1))


def n_blocks(n: int) -> int:
    return max(round(n * DEPTH), 1)


class CSPDarknet(nn.Module):
    """Backbone: Focus stem and four stages; returns the stride-8, 16 and 32 maps (64, 128, 256 channels)."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        c = int(64 * WIDTH)
        self.stem = Focus(in_chans, c)
        self.dark2 = nn.Sequential(DWConv(c, 2 * c, 3, 2), CSPLayer(2 * c, 2 * c, n_blocks(3)))
        self.dark3 = nn.Sequential(DWConv(2 * c, 4 * c, 3, 2), CSPLayer(4 * c, 4 * c, n_blocks(9)))
        self.dark4 = nn.Sequential(DWConv(4 * c, 8 * c, 3, 2), CSPLayer(8 * c, 8 * c, n_blocks(9)))
        self.dark5 = nn.Sequential(
            DWConv(8 * c, 16 * c, 3, 2),
            SPP(16 * c, 16 * c),
            CSPLayer(16 * c, 16 * c, n_blocks(3), shortcut=False),
        )
        self.out_channels = (4 * c, 8 * c, 16 * c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.dark3(self.dark2(self.stem(x)))
        c4 = self.dark4(c3)
        return c3, c4, self.dark5(c4)


def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest upsampling to ``like``'s size (odd inputs make the maps' sizes not exactly double)."""
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class PAFPN(nn.Module):
    """Top-down then bottom-up path aggregation over the three backbone maps (YOLOX's YOLOPAFPN)."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c3, c4, c5 = channels
        n = n_blocks(3)
        self.lateral_conv0 = BaseConv(c5, c4)
        self.c3_p4 = CSPLayer(2 * c4, c4, n, shortcut=False)
        self.reduce_conv1 = BaseConv(c4, c3)
        self.c3_p3 = CSPLayer(2 * c3, c3, n, shortcut=False)
        self.bu_conv2 = DWConv(c3, c3, 3, 2)
        self.c3_n3 = CSPLayer(2 * c3, c4, n, shortcut=False)
        self.bu_conv1 = DWConv(c4, c4, 3, 2)
        self.c3_n4 = CSPLayer(2 * c4, c5, n, shortcut=False)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x3, x4, x5 = feats
        fpn0 = self.lateral_conv0(x5)
        f4 = self.c3_p4(torch.cat([up(fpn0, x4), x4], dim=1))
        fpn1 = self.reduce_conv1(f4)
        pan3 = self.c3_p3(torch.cat([up(fpn1, x3), x3], dim=1))
        pan4 = self.c3_n3(torch.cat([self.bu_conv2(pan3), fpn1], dim=1))
        pan5 = self.c3_n4(torch.cat([self.bu_conv1(pan4), fpn0], dim=1))
        return pan3, pan4, pan5


class YOLOXNano(nn.Module):
    """Backbone -> attention on each of its three outputs -> PAFPN -> GAP of each, concatenated -> head."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        attn_layer: AttnFactory = NoAttention,
        head_layer: HeadFactory = LinearHead,
        drop_rate: float = 0.0,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        self.backbone = CSPDarknet(in_chans)
        self.attn = nn.ModuleList(attn_layer(c) for c in self.backbone.out_channels)
        self.neck = PAFPN(self.backbone.out_channels)
        self.head = nn.Sequential(nn.Dropout(drop_rate), head_layer(sum(self.backbone.out_channels), num_classes))
        apply_norm(norm, self.backbone, self.neck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = tuple(a(f) for a, f in zip(self.attn, self.backbone(x), strict=True))
        pooled = [f.mean(dim=(2, 3)) for f in self.neck(feats)]
        return self.head(torch.cat(pooled, dim=1))


@MODELS.register("yoloxnano")
def yoloxnano(num_classes: int, in_chans: int = 3, **kwargs) -> YOLOXNano:
    return YOLOXNano(num_classes=num_classes, in_chans=in_chans, **kwargs)
