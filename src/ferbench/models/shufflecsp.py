"""ShuffleCSP (paper 003, Table 1): 1x40x40 -> conv -> SA -> six CSP blocks with grouped convs and channel
shuffle -> CA -> 3x3 conv to the classes -> adaptive average pool.

Table 1 pins everything outside the CSP blocks: the stem (88 = 1*8*9 conv without bias + BN(8)), SA (19:
a 3x3 conv over [avg; max] with bias), CA (262,144 = 2 * 512 * 256, an MLP with reduction 2, no biases),
the classifier conv (32,263 = 512*7*9 + 7). The paper's text does not describe a CSP block's insides.
Its six per-block counts fit one formula exactly, for (in, out) = (i, o):

    params = i*o/2 + o^2 + 5.5 i^2 + 2 o + 23.5 i

Our block reproduces every term that depends on widths squared, with the groups g = 4 of the paper's final
model ("SA+Base(g=4)+CA"): 1x1 conv i->i (i^2) and two 3x3 convs i->i in g groups (2 * 9/g i^2 = 4.5 i^2),
a 1x1 fusion 2i->o in g groups (2io/g = io/2), a 1x1 conv o->o with BN (o^2 + 2o). Its per-channel terms
(BN and depthwise weights) come to 17 i, not 23.5 i: each block has 6.5 i parameters fewer than the
paper's (52 of 1,260 in the first block, 2,340 of 1,076,588 in the last; 4,628 of 1,906,382 in all).
"""

from __future__ import annotations

import torch
from torch import nn

from ferbench.attention import ATTENTION, AttnFactory, NoAttention
from ferbench.models.baselines import reject_attention
from ferbench.models.heads import HeadFactory, LinearHead
from ferbench.models.layers import ConvNormAct
from ferbench.models.registry import MODELS

# (out channels, stride) of the six CSP blocks: 8 -> 24 -> 32 -> 72 -> 216 -> 360 -> 512 channels
# at 40, 40, 20, 10, 5, 3, 2 pixels.
STAGES = ((24, 1), (32, 2), (72, 2), (216, 2), (360, 2), (512, 2))
STEM = 8


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: channel c of group k moves to position c * groups + k."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class CSPBlock(nn.Module):
    """Two paths over the same input, concatenated, fused by a grouped 1x1 conv and shuffled.

    Dense path: 1x1 conv, shuffle, two grouped 3x3 convs (the first strided). Partial path: one strided
    depthwise 3x3 conv (the cross-stage shortcut). Fusion: grouped 1x1 (2i -> o), shuffle, 1x1 o -> o.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, groups: int = 4) -> None:
        super().__init__()
        self.groups = groups
        self.reduce = ConvNormAct(c_in, c_in)
        self.dense = nn.Sequential(
            ConvNormAct(c_in, c_in, 3, stride, groups=groups),
            ConvNormAct(c_in, c_in, 3, groups=groups, act_layer=None),
        )
        self.partial = ConvNormAct(c_in, c_in, 3, stride, groups=c_in, act_layer=None)
        self.fuse = nn.Conv2d(2 * c_in, c_out, 1, groups=groups, bias=False)
        self.mix = ConvNormAct(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.dense(channel_shuffle(self.reduce(x), self.groups))
        y = self.fuse(torch.cat([dense, self.partial(x)], dim=1))
        return self.mix(channel_shuffle(y, self.groups))


class Stem(ConvNormAct):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 3)


class ConvClassifier(nn.Conv2d):
    """Table 1's last conv: 3x3 to one map per class (with bias), then average-pooled to the logits."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        super().__init__(c_in, num_classes, 3, padding=1)


class PooledHead(nn.Module):
    """Heads other than the paper's conv (e.g. AM-Softmax's cosine head): pool, then ``head_layer``."""

    def __init__(self, c_in: int, num_classes: int, head_layer: HeadFactory) -> None:
        super().__init__()
        self.head = head_layer(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))[..., None, None]


def paper_attention(name: str) -> AttnFactory:
    """Paper 003's SA / CA from the attention registry, or the identity while it lacks them."""
    return ATTENTION.get(name) if name in ATTENTION else NoAttention


class ShuffleCSP(nn.Module):
    """Top-level children are Table 1's rows, so ``layer_table`` prints the table in the paper's form."""

    paper_names = {
        "stem": "C, k=3,s=1,p=1",
        "sa": "SA",
        **{f"csp{i}": "CSP_BLOCK" for i in range(1, len(STAGES) + 1)},
        "ca": "CA",
        "classifier": "C, k=3,s=1,p=1",
        "pool": "AdaptiveAvgPool2d",
    }

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        groups: int = 4,
        sa_layer: AttnFactory | None = None,
        ca_layer: AttnFactory | None = None,
        use_sa: bool = True,
        use_ca: bool = True,
        attn_layer: AttnFactory = NoAttention,
        head_layer: HeadFactory = LinearHead,
    ) -> None:
        """SA and CA have fixed places (``use_sa``, ``use_ca``): any ``attn_layer`` but none is a ConfigError."""
        super().__init__()
        reject_attention(attn_layer, "shufflecsp", "has its SA and CA at fixed places (model.use_sa, model.use_ca)")
        sa_layer = (sa_layer or paper_attention("sa")) if use_sa else NoAttention
        ca_layer = (ca_layer or paper_attention("ca")) if use_ca else NoAttention
        self.stem = Stem(in_chans, STEM)
        self.sa = sa_layer(STEM)
        c = STEM
        for i, (c_out, stride) in enumerate(STAGES, start=1):
            self.add_module(f"csp{i}", CSPBlock(c, c_out, stride, groups))
            c = c_out
        self.ca = ca_layer(c)
        self.classifier = (
            ConvClassifier(c, num_classes) if head_layer is LinearHead else PooledHead(c, num_classes, head_layer)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x.flatten(1)


@MODELS.register("shufflecsp")
def shufflecsp(num_classes: int, in_chans: int = 1, **kwargs) -> ShuffleCSP:
    return ShuffleCSP(num_classes=num_classes, in_chans=in_chans, **kwargs)
