"""YOLOX-Nano as paper 000 trains it: a face-expression *detector* (CSPDarknet + attention + PAFPN + decoupled head).

The backbone and PAFPN are the classification form's (``models/yoloxnano.py``); the attention block sits on each of
the three backbone outputs before the FPN (paper 000, Sec. 3.3). The head is Megvii YOLOX's decoupled, anchor-free
head at width 0.25 with depthwise convs: per level a 1x1 stem, two 3x3 conv towers (classes; box + objectness),
1x1 predictions. The forward returns one row per grid cell: box (cx, cy, w, h in input pixels), objectness logit
and class logits; ``postprocess`` turns them into scored, NMS-filtered boxes. SimOTA and the losses live in
``training/detection/``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert

from ferbench.attention import AttnFactory, NoAttention
from ferbench.models.registry import MODELS
from ferbench.models.yoloxnano import PAFPN, WIDTH, BaseConv, CSPDarknet, DWConv, apply_norm

STRIDES = (8, 16, 32)
BN_MOMENTUM_NOTE = """YOLOX sets BatchNorm momentum 0.03 (it trains COCO for 300 epochs, evaluating an EMA of the
weights). On a few hundred images the running statistics then lag the weights: overfitting 32 pasted faces, train-mode
top-1 was 100% after 20 steps while eval-mode stayed at 50-62% through 120 steps; with 0.1 (PyTorch's default)
eval-mode reached 100% at step 60. ``model.bn_momentum`` sets it; 0.1 by default."""
PRIOR_PROB = 1e-2
"""YOLOX's initial foreground probability of every class and objectness output (bias init)."""


class DecoupledHead(nn.Module):
    """YOLOX's head for one level: stem, then a class tower and a box/objectness tower."""

    def __init__(self, c_in: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.stem = BaseConv(c_in, hidden)
        self.cls_convs = nn.Sequential(DWConv(hidden, hidden), DWConv(hidden, hidden))
        self.reg_convs = nn.Sequential(DWConv(hidden, hidden), DWConv(hidden, hidden))
        self.cls_pred = nn.Conv2d(hidden, num_classes, 1)
        self.reg_pred = nn.Conv2d(hidden, 4, 1)
        self.obj_pred = nn.Conv2d(hidden, 1, 1)
        bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for conv in (self.cls_pred, self.obj_pred):
            nn.init.constant_(conv.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4 + 1 + classes, H, W): raw box offsets, objectness logit, class logits."""
        x = self.stem(x)
        reg = self.reg_convs(x)
        return torch.cat([self.reg_pred(reg), self.obj_pred(reg), self.cls_pred(self.cls_convs(x))], dim=1)


def grid_priors(sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(N, 3): each grid cell's top-left x, y (in cells) and its stride, levels concatenated in order."""
    rows = []
    for (h, w), stride in zip(sizes, strides, strict=True):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        rows.append(torch.stack([xs.flatten(), ys.flatten(), torch.full((h * w,), stride, device=device)], dim=1))
    return torch.cat(rows).float()


class YOLOXNanoDet(nn.Module):
    """Backbone -> attention on each of its three outputs -> PAFPN -> one decoupled head per level."""

    task = "detection"

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        attn_layer: AttnFactory = NoAttention,
        bn_momentum: float = 0.1,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = CSPDarknet(in_chans)
        self.attn = nn.ModuleList(attn_layer(c) for c in self.backbone.out_channels)
        self.neck = PAFPN(self.backbone.out_channels)
        hidden = int(256 * WIDTH)
        self.heads = nn.ModuleList(DecoupledHead(c, num_classes, hidden) for c in self.backbone.out_channels)
        self.strides = STRIDES
        for module in self.modules():  # see BN_MOMENTUM_NOTE
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = bn_momentum
        apply_norm(norm, self.backbone, self.neck, self.heads)  # as the classifier form's, the heads too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 5 + classes) over the N grid cells of the three levels: cx, cy, w, h (pixels), logits."""
        feats = tuple(a(f) for a, f in zip(self.attn, self.backbone(x), strict=True))
        maps = [head(f) for head, f in zip(self.heads, self.neck(feats), strict=True)]
        priors = grid_priors([m.shape[-2:] for m in maps], self.strides, x.device)
        raw = torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)
        stride = priors[:, 2:3]
        centres = (raw[..., :2] + priors[:, :2]) * stride
        sizes = raw[..., 2:4].clamp(max=10.0).exp() * stride  # clamp: an early exp overflow would be inf
        return torch.cat([centres, sizes, raw[..., 4:]], dim=-1)

    def priors(self, input_size: int, device: torch.device) -> torch.Tensor:
        """The grid cells ``forward`` returns rows for, at a square ``input_size`` (see ``grid_priors``)."""
        sizes = [(math.ceil(input_size / s), math.ceil(input_size / s)) for s in self.strides]
        return grid_priors(sizes, self.strides, device)


def postprocess(
    outputs: torch.Tensor, score_threshold: float = 0.001, nms_iou: float = 0.65, max_detections: int = 100
) -> list[dict[str, torch.Tensor]]:
    """Per image: boxes (xyxy), scores (objectness x class probability) and labels, class-wise NMS.

    The low default threshold keeps the whole precision-recall curve for mAP (as YOLOX's COCO evaluation).
    """
    boxes = box_convert(outputs[..., :4], "cxcywh", "xyxy")
    probs = outputs[..., 5:].sigmoid() * outputs[..., 4:5].sigmoid()
    scores, labels = probs.max(dim=-1)
    results = []
    for b, s, lab in zip(boxes, scores, labels, strict=True):
        keep = s >= score_threshold
        b, s, lab = b[keep], s[keep], lab[keep]
        kept = batched_nms(b.float(), s.float(), lab, nms_iou)[:max_detections]
        results.append({"boxes": b[kept], "scores": s[kept], "labels": lab[kept]})
    return results


class DetectionPipeline(nn.Module):
    """Network + decoding + NMS: what a frame-rate figure for a detector times (the paper's fps)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return postprocess(self.model(x))


@MODELS.register("yoloxnano_det")
def yoloxnano_det(
    num_classes: int,
    in_chans: int = 3,
    attn_layer: AttnFactory = NoAttention,
    head_layer: object = None,
    bn_momentum: float = 0.1,
    norm: str = "bn",
) -> YOLOXNanoDet:
    """``head_layer`` (the classifier head a loss asks for) has no place in a detector: not used. ``norm=gn``
    (``+model.norm=gn``; not in the config file, so YOLOX's BatchNorm runs keep their ids) swaps every BatchNorm
    for GroupNorm."""
    return YOLOXNanoDet(
        num_classes=num_classes, in_chans=in_chans, attn_layer=attn_layer, bn_momentum=bn_momentum, norm=norm
    )
