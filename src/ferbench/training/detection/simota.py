"""SimOTA label assignment and YOLOX's losses: which grid cells learn which face box, and from what.

Follows Megvii YOLOX's SimOTA as released in v0.1-v0.2 (``yolox/models/yolo_head.py``, ``get_in_boxes_info``;
v0.3 narrowed the candidates to a 1.5-stride square around the centre, cost 1e6): a grid cell is a candidate for a
face box when its centre lies inside the box or within ``center_radius`` strides of the box centre (2.5;
``model.center_radius=1.5`` gives v0.3's square: for a face wider than 3 strides, the same cheap cells); SimOTA
gives each box its ``k`` cheapest candidates, ``k`` = the sum of the box's 10 best IoUs (at least 1), the cost
being class BCE + 3 x -log IoU (+1e5 outside box-and-centre); a cell claimed by several boxes keeps the cheapest.
Losses, each summed and divided by the number of foreground cells: 5 x (1 - IoU^2) on boxes, BCE on objectness
over every cell, BCE on classes (target: one-hot x the cell's IoU, or one-hot alone with
``model.iou_class_targets=false``) over foreground cells. YOLOX's L1 loss on box offsets (its last 15 epochs) is
left out.

Targets are a padded tensor (B, M, 5): class, x1, y1, x2, y2 in input pixels; rows with class < 0 are padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou

CENTER_RADIUS = 2.5
IOU_COST_WEIGHT = 3.0
OUTSIDE_COST = 1e5
TOP_CANDIDATES = 10
BOX_LOSS_WEIGHT = 5.0


def pairwise_candidates(
    gt: torch.Tensor, priors: torch.Tensor, center_radius: float = CENTER_RADIUS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cells with centre in any box or near any box centre, (G, N) in-box-and-near-centre) for xyxy boxes ``gt``;
    near = within ``center_radius`` strides of the box centre on both axes."""
    stride = priors[:, 2]
    cx, cy = (priors[:, 0] + 0.5) * stride, (priors[:, 1] + 0.5) * stride
    inside = (cx > gt[:, None, 0]) & (cx < gt[:, None, 2]) & (cy > gt[:, None, 1]) & (cy < gt[:, None, 3])
    gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    r = center_radius * stride
    near = ((cx - gcx[:, None]).abs() < r) & ((cy - gcy[:, None]).abs() < r)
    candidate = (inside | near).any(dim=0)
    return candidate, (inside & near)[:, candidate]


@dataclass(frozen=True)
class LossOptions:
    """Where ferbench's YOLOX loss may differ from YOLOX's (``model.*`` keys of a detector; defaults: YOLOX v0.1).

    ``iou_class_targets``: a matched cell's class target is one-hot x its IoU (YOLOX) or one-hot alone.
    ``center_radius``: SimOTA's centre square, in strides (2.5; YOLOX v0.3: 1.5).
    ``class_cost``: SimOTA's matching cost includes the class (YOLOX: BCE of sqrt(class x objectness) against
    the one-hot class); False keeps its objectness part alone (-log sqrt(objectness)): for expressions, classes
    of one object, the face, whose confusion should not decide which cells learn that a face is there.
    """

    iou_class_targets: bool = True
    center_radius: float = CENTER_RADIUS
    class_cost: bool = True


@dataclass
class Assignment:
    """SimOTA's answer for one image: which cells are foreground, their box, class and IoU with it."""

    foreground: torch.Tensor  # (N,) bool
    gt_index: torch.Tensor  # (F,) index into the image's boxes, per foreground cell (in cell order)
    iou: torch.Tensor  # (F,) IoU of each foreground cell's predicted box with its assigned box


@torch.no_grad()
def simota(
    boxes: torch.Tensor,
    obj: torch.Tensor,
    cls: torch.Tensor,
    gt: torch.Tensor,
    gt_cls: torch.Tensor,
    priors: torch.Tensor,
    options: LossOptions = LossOptions(),
) -> Assignment:
    """Assign the image's ``G`` boxes (xyxy ``gt``, classes ``gt_cls``) to the ``N`` cells of its predictions.

    ``boxes`` (N, 4) are predicted xyxy boxes, ``obj`` (N,) and ``cls`` (N, C) logits; ``priors`` as
    ``grid_priors``; ``options``' ``center_radius`` and ``class_cost`` shape the matching.
    """
    n = len(boxes)
    candidate, core = pairwise_candidates(gt, priors, options.center_radius)
    cand_idx = candidate.nonzero().squeeze(1)
    foreground = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    if len(cand_idx) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return Assignment(foreground, empty, boxes.new_zeros(0))
    ious = box_iou(gt, boxes[cand_idx].float())  # (G, K)
    cost = matching_class_cost(obj[cand_idx], cls[cand_idx], gt_cls, options.class_cost)
    cost = cost + IOU_COST_WEIGHT * -torch.log(ious + 1e-8) + OUTSIDE_COST * (~core).float()

    k_top = min(TOP_CANDIDATES, len(cand_idx))
    dynamic_k = ious.topk(k_top, dim=1).values.sum(1).int().clamp(min=1)
    matching = torch.zeros_like(cost, dtype=torch.bool)
    for g in range(len(gt)):
        matching[g, cost[g].topk(int(dynamic_k[g]), largest=False).indices] = True
    shared = matching.sum(0) > 1
    if shared.any():  # a cell claimed by several boxes keeps the cheapest
        cheapest = cost[:, shared].argmin(0)
        matching[:, shared] = False
        matching[cheapest, shared.nonzero().squeeze(1)] = True
    claimed = matching.any(0)
    gt_index = matching[:, claimed].float().argmax(0)
    foreground[cand_idx[claimed]] = True
    return Assignment(foreground, gt_index, ious[gt_index, claimed.nonzero().squeeze(1)])


def matching_class_cost(obj: torch.Tensor, cls: torch.Tensor, gt_cls: torch.Tensor, with_class: bool) -> torch.Tensor:
    """(G, K) SimOTA's class term for ``K`` candidates' logits: YOLOX's BCE of sqrt(class x objectness) against each
    box's one-hot class, or (``with_class=False``) the same BCE with objectness alone against 1."""
    obj_p = obj.float().sigmoid()
    if not with_class:
        return (-0.5 * torch.log(obj_p + 1e-8))[None].expand(len(gt_cls), -1)
    probs = (cls.float().sigmoid() * obj_p[:, None]).sqrt()
    onehot = F.one_hot(gt_cls.long(), cls.shape[1]).float()  # (G, C)
    return F.binary_cross_entropy(
        probs[None].expand(len(gt_cls), -1, -1), onehot[:, None].expand(-1, len(obj), -1), reduction="none"
    ).sum(-1)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each row of ``a`` with the same row of ``b`` (xyxy)."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    return inter / union.clamp(min=1e-9)


@dataclass
class DetectionLoss:
    total: torch.Tensor
    box: torch.Tensor
    obj: torch.Tensor
    cls: torch.Tensor
    foreground: int


def yolox_loss(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    priors: torch.Tensor,
    options: LossOptions = LossOptions(),
) -> DetectionLoss:
    """YOLOX's loss over a batch: ``outputs`` (B, N, 5 + C) as the detector's forward, ``targets`` (B, M, 5).

    ``options``: where it departs from YOLOX (``LossOptions``; YOLOX's class target, one-hot x IoU, keeps every
    class target small while boxes are poor)."""
    outputs = outputs.float()
    num_classes = outputs.shape[-1] - 5
    pred_boxes = box_convert(outputs[..., :4], "cxcywh", "xyxy")
    obj_targets = torch.zeros_like(outputs[..., 4])
    box_sum = outputs.new_zeros(())
    cls_sum = outputs.new_zeros(())
    n_fg = 0
    for b in range(len(outputs)):
        real = targets[b, :, 0] >= 0
        if not real.any():
            continue
        gt_cls, gt = targets[b, real, 0].long(), targets[b, real, 1:].float()
        logits = outputs[b].detach()
        a = simota(pred_boxes[b].detach(), logits[:, 4], logits[:, 5:], gt, gt_cls, priors, options)
        if not a.foreground.any():
            continue
        obj_targets[b, a.foreground] = 1.0
        n_fg += int(a.foreground.sum())
        box_sum = box_sum + (1 - paired_iou(pred_boxes[b, a.foreground], gt[a.gt_index]) ** 2).sum()
        cls_target = F.one_hot(gt_cls[a.gt_index], num_classes).float()
        if options.iou_class_targets:
            cls_target = cls_target * a.iou[:, None]
        cls_sum = cls_sum + F.binary_cross_entropy_with_logits(
            outputs[b, a.foreground, 5:], cls_target, reduction="sum"
        )
    obj_sum = F.binary_cross_entropy_with_logits(outputs[..., 4], obj_targets, reduction="sum")
    scale = max(n_fg, 1)
    box, obj, cls = box_sum / scale, obj_sum / scale, cls_sum / scale
    return DetectionLoss(BOX_LOSS_WEIGHT * box + obj + cls, box, obj, cls, n_fg)
