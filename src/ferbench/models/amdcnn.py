"""AMDCNN (paper 002): SFEM, four DFEMs with attention, auxiliary classifiers, adaptive weighted fusion.

Shapes follow Table 1 at 48x48 grey: two valid 3x3 convs (48 -> 46 -> 44, 16 channels), then DFEMs halving
the map (44 -> 22 -> 11 -> 6 -> 3) and doubling the width (32, 64, 128, 256). Sec. III-B gives a DFEM's two
parts: a standard conv block (two 3x3 convs, BN, ReLU, max-pool, MCBAM) and a residual block, summed.
"""

from __future__ import annotations

import torch
from torch import nn

from ferbench.attention import AttnFactory, NoAttention
from ferbench.errors import ConfigError
from ferbench.models.heads import HeadFactory, LinearHead
from ferbench.models.layers import ConvNormAct
from ferbench.models.registry import MODELS

WIDTHS = (32, 64, 128, 256)
SFEM_WIDTH = 16


class DFEM(nn.Module):
    """Deep feature extraction module: conv block with attention + strided residual conv, summed (Sec. III-B).

    The residual conv is 3x3 by default: with it the whole model has 1.60 M parameters, the paper's figure;
    a 1x1 shortcut (mini-Xception's) gives 1.26 M.
    """

    def __init__(self, c_in: int, c_out: int, attn_layer: AttnFactory, residual_kernel: int = 3) -> None:
        super().__init__()
        # ConvNormAct without its act: the ReLU stays a sibling, so the state-dict keys (block.0.*, block.2.*) stay
        self.block = nn.Sequential(
            ConvNormAct(c_in, c_out, 3, act_layer=None),
            nn.ReLU(inplace=True),
            ConvNormAct(c_out, c_out, 3, act_layer=None),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),  # "same" pooling: 44 -> 22 -> 11 -> 6 -> 3 (Table 1)
            attn_layer(c_out),
        )
        self.residual = ConvNormAct(c_in, c_out, residual_kernel, stride=2, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.residual(x)


class Classifier(nn.Module):
    """ACM / MCM (Fig. 5): 3x3 conv, BN, adaptive average pooling, then Eq. (12)'s ``w_c M_a + b_c``."""

    def __init__(self, c_in: int, width: int, num_classes: int, head_layer: HeadFactory) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvNormAct(c_in, width, 3, act_layer=None), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = head_layer(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AdaptiveFusion(nn.Module):
    """AWFM, Eqs. (13)-(14): sum of the classifiers' outputs with weights kept positive and summing to 1.

    The weights are a softmax over free parameters (equal at start). The paper fuses probabilities; we fuse
    logits (or cosines), so one loss trains the fused output as well as each classifier.
    """

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.logit_weights = nn.Parameter(torch.zeros(n_inputs))

    @property
    def weights(self) -> torch.Tensor:
        return self.logit_weights.softmax(0)

    def forward(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        return sum(w * o for w, o in zip(self.weights, outputs, strict=True))


class AMDCNN(nn.Module):
    """SFEM -> DFEM1..4 -> MCM, with auxiliary classifiers after DFEM1..n_aux and adaptive fusion."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        n_aux: int = 3,
        attn_layer: AttnFactory = NoAttention,
        head_layer: HeadFactory = LinearHead,
        residual_kernel: int = 3,
        classifier_width: int | None = None,
    ) -> None:
        super().__init__()
        if n_aux not in range(len(WIDTHS)):
            raise ConfigError(f"model.n_aux: {n_aux}; expected 0, 1, 2 or 3 (auxiliary classifiers after DFEM1-3)")
        width = classifier_width or num_classes  # Fig. 5: the conv maps straight to the class scores
        self.sfem = nn.Sequential(
            ConvNormAct(in_chans, SFEM_WIDTH, 3, padding=0, act_layer=None), nn.ReLU(inplace=True),
            ConvNormAct(SFEM_WIDTH, SFEM_WIDTH, 3, padding=0, act_layer=None), nn.ReLU(inplace=True),
        )  # fmt: skip
        chans = [SFEM_WIDTH, *WIDTHS]
        pairs = zip(chans[:-1], chans[1:], strict=True)
        self.dfems = nn.ModuleList(DFEM(a, b, attn_layer, residual_kernel) for a, b in pairs)
        self.aux = nn.ModuleList(Classifier(c, width, num_classes, head_layer) for c in WIDTHS[:n_aux])
        self.main = Classifier(WIDTHS[-1], width, num_classes, head_layer)
        self.fusion = AdaptiveFusion(n_aux + 1)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(fused logits, auxiliary logits in DFEM order); the training module trains both."""
        x = self.sfem(x)
        aux = []
        for i, dfem in enumerate(self.dfems):
            x = dfem(x)
            if i < len(self.aux):
                aux.append(self.aux[i](x))
        return self.fusion([*aux, self.main(x)]), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


@MODELS.register("amdcnn")
def amdcnn(num_classes: int, in_chans: int = 1, **kwargs) -> AMDCNN:
    return AMDCNN(num_classes=num_classes, in_chans=in_chans, **kwargs)
