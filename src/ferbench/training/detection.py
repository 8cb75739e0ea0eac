"""Detection training: SimOTA label assignment, YOLOX's losses, and the LightningModule the runner fits.

Follows Megvii YOLOX's SimOTA as released in v0.1-v0.2 (``yolox/models/yolo_head.py``, ``get_in_boxes_info``;
v0.3 narrowed the candidates to a 1.5-stride square around the centre, cost 1e6): a grid cell is a candidate for a
face box when its centre lies inside the box or within 2.5 strides of the box centre; SimOTA gives each box its
``k`` cheapest candidates, ``k`` = the sum of the box's 10 best IoUs (at least 1), the cost being class BCE + 3 x
-log IoU (+1e5 outside box-and-centre); a cell claimed by several boxes keeps the cheapest. Losses, each summed and
divided by the number of foreground cells: 5 x (1 - IoU^2) on boxes, BCE on objectness over every cell, BCE on
classes (target: one-hot x the cell's IoU, or one-hot alone with ``model.iou_class_targets=false``) over foreground
cells. YOLOX's L1 loss on box offsets (its last 15 epochs) is left out.

Targets are a padded tensor (B, M, 5): class, x1, y1, x2, y2 in input pixels; rows with class < 0 are padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_convert, box_iou

from ferbench.models.profile import frames_per_second
from ferbench.models.yoloxnano_det import DetectionPipeline, postprocess
from ferbench.training.metrics import ImageMean
from ferbench.training.mixup import mixes
from ferbench.training.module import HistoryModule

CENTER_RADIUS = 2.5
IOU_COST_WEIGHT = 3.0
OUTSIDE_COST = 1e5
TOP_CANDIDATES = 10
BOX_LOSS_WEIGHT = 5.0

SCORE_THRESHOLD = 0.5
"""Score (objectness x class probability) a detection needs to count for recall, precision and F1: the
threshold of the YOLOX-PyTorch evaluation (bubbliiiing/yolox-pytorch ``get_map.py``, score_threhold 0.5) that
papers of paper 000's kind report. mAP uses every detection (threshold 0.001)."""
MATCH_IOU = 0.5


def pairwise_candidates(gt: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cells with centre in any box or near any box centre, (G, N) in-box-and-near-centre) for xyxy boxes ``gt``."""
    stride = priors[:, 2]
    cx, cy = (priors[:, 0] + 0.5) * stride, (priors[:, 1] + 0.5) * stride
    inside = (cx > gt[:, None, 0]) & (cx < gt[:, None, 2]) & (cy > gt[:, None, 1]) & (cy < gt[:, None, 3])
    gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    r = CENTER_RADIUS * stride
    near = ((cx - gcx[:, None]).abs() < r) & ((cy - gcy[:, None]).abs() < r)
    candidate = (inside | near).any(dim=0)
    return candidate, (inside & near)[:, candidate]


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
) -> Assignment:
    """Assign the image's ``G`` boxes (xyxy ``gt``, classes ``gt_cls``) to the ``N`` cells of its predictions.

    ``boxes`` (N, 4) are predicted xyxy boxes, ``obj`` (N,) and ``cls`` (N, C) logits; ``priors`` as
    ``grid_priors``.
    """
    n = len(boxes)
    candidate, core = pairwise_candidates(gt, priors)
    cand_idx = candidate.nonzero().squeeze(1)
    foreground = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    if len(cand_idx) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return Assignment(foreground, empty, boxes.new_zeros(0))
    ious = box_iou(gt, boxes[cand_idx].float())  # (G, K)
    probs = (cls[cand_idx].float().sigmoid() * obj[cand_idx, None].float().sigmoid()).sqrt()
    onehot = F.one_hot(gt_cls.long(), cls.shape[1]).float()  # (G, C)
    cls_cost = F.binary_cross_entropy(
        probs[None].expand(len(gt), -1, -1), onehot[:, None].expand(-1, len(cand_idx), -1), reduction="none"
    ).sum(-1)
    cost = cls_cost + IOU_COST_WEIGHT * -torch.log(ious + 1e-8) + OUTSIDE_COST * (~core).float()

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
    outputs: torch.Tensor, targets: torch.Tensor, priors: torch.Tensor, iou_class_targets: bool = True
) -> DetectionLoss:
    """YOLOX's loss over a batch: ``outputs`` (B, N, 5 + C) as the detector's forward, ``targets`` (B, M, 5).

    ``iou_class_targets``: YOLOX's class target is the one-hot class x the cell's IoU with its box (while boxes
    are poor, every class target is small); False: the one-hot class alone (``model.iou_class_targets``)."""
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
        a = simota(pred_boxes[b].detach(), outputs[b, :, 4].detach(), outputs[b, :, 5:].detach(), gt, gt_cls, priors)
        if not a.foreground.any():
            continue
        obj_targets[b, a.foreground] = 1.0
        n_fg += int(a.foreground.sum())
        box_sum = box_sum + (1 - paired_iou(pred_boxes[b, a.foreground], gt[a.gt_index]) ** 2).sum()
        cls_target = F.one_hot(gt_cls[a.gt_index], num_classes).float()
        if iou_class_targets:
            cls_target = cls_target * a.iou[:, None]
        cls_sum = cls_sum + F.binary_cross_entropy_with_logits(
            outputs[b, a.foreground, 5:], cls_target, reduction="sum"
        )
    obj_sum = F.binary_cross_entropy_with_logits(outputs[..., 4], obj_targets, reduction="sum")
    scale = max(n_fg, 1)
    box, obj, cls = box_sum / scale, obj_sum / scale, cls_sum / scale
    return DetectionLoss(BOX_LOSS_WEIGHT * box + obj + cls, box, obj, cls, n_fg)


# ------------------------------------------------------------------------------------------------ metrics


def as_target_dicts(targets: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Padded (B, M, 5) targets -> torchmetrics' per-image ``{"boxes", "labels"}``."""
    out = []
    for t in targets:
        real = t[:, 0] >= 0
        out.append({"boxes": t[real, 1:].float(), "labels": t[real, 0].long()})
    return out


def matched_counts(
    preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], num_classes: int
) -> torch.Tensor:
    """Per class: (true positives, detections, ground-truth boxes) at ``SCORE_THRESHOLD`` and IoU ``MATCH_IOU``.

    Greedy matching by descending score within a class, each box matched at most once (VOC/COCO matching).
    """
    counts = torch.zeros(num_classes, 3, dtype=torch.long)
    for p, t in zip(preds, targets, strict=True):
        keep = p["scores"] >= SCORE_THRESHOLD
        boxes, labels, scores = p["boxes"][keep].cpu(), p["labels"][keep].cpu(), p["scores"][keep].cpu()
        gt_boxes, gt_labels = t["boxes"].cpu(), t["labels"].cpu()
        for c in range(num_classes):
            mine, theirs = labels == c, gt_labels == c
            counts[c, 1] += int(mine.sum())
            counts[c, 2] += int(theirs.sum())
            if not mine.any() or not theirs.any():
                continue
            order = scores[mine].argsort(descending=True)
            ious = box_iou(boxes[mine][order], gt_boxes[theirs])
            used = torch.zeros(ious.shape[1], dtype=torch.bool)
            for row in ious:
                row = row.masked_fill(used, -1)
                best = int(row.argmax())
                if row[best] >= MATCH_IOU:
                    used[best] = True
                    counts[c, 0] += 1
    return counts


def recall_precision_f1(counts: torch.Tensor) -> dict[str, float]:
    """Macro averages over the classes that have ground-truth boxes (a class with none has no recall)."""
    tp, det, gt = counts[:, 0].double(), counts[:, 1].double(), counts[:, 2].double()
    present = gt > 0
    recall = tp / gt.clamp(min=1)
    precision = torch.where(det > 0, tp / det.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(recall + precision > 0, 2 * recall * precision / (recall + precision), torch.zeros_like(tp))
    return {
        "recall": float(recall[present].mean()) if present.any() else 0.0,
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def face_confusion(
    preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]], num_classes: int
) -> tuple[torch.Tensor, int]:
    """Rows: the class of each image's first face box; columns: the class of the top-scoring detection that
    overlaps it (IoU >= 0.5). Also returns how many faces had no such detection (left out of the matrix)."""
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    missed = 0
    for p, t in zip(preds, targets, strict=True):
        if len(t["labels"]) == 0:
            continue
        ious = box_iou(p["boxes"].cpu().float(), t["boxes"][:1].cpu())[:, 0] if len(p["boxes"]) else None
        hits = (ious >= MATCH_IOU).nonzero().squeeze(1) if ious is not None else torch.zeros(0, dtype=torch.long)
        if len(hits) == 0:
            missed += 1
            continue
        top = hits[p["scores"].cpu()[hits].argmax()]
        matrix[int(t["labels"][0]), int(p["labels"].cpu()[top])] += 1
    return matrix, missed


class DetectionModule(HistoryModule):
    """Fits a detector with ``yolox_loss``; tests with torchmetrics' mAP plus recall / F1 at a score threshold.

    Keeps the same per-epoch history as ``FERModule`` (train/val loss, lr, seconds; saved in checkpoints) so
    resume, early stopping on ``val_loss`` and the run record work unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        optim_cfg: Any,
        num_classes: int,
        max_epochs: int,
        input_size: int,
        in_chans: int = 3,
        fps_seconds: float = 2.0,
        no_aug_epochs: int = 0,
        iou_class_targets: bool = True,
    ) -> None:
        super().__init__()
        self.no_aug_epochs, self.iou_class_targets = no_aug_epochs, iou_class_targets
        self.model = model
        self.optim_cfg = optim_cfg
        self.num_classes = num_classes
        self.max_epochs = max_epochs
        self.input_size, self.in_chans, self.fps_seconds = input_size, in_chans, fps_seconds
        self.train_loss, self.val_loss = ImageMean(), ImageMean()
        self.test_metrics = nn.ModuleDict({"map": MeanAveragePrecision(box_format="xyxy", iou_type="bbox")})
        self.test_results: dict[str, Any] = {}
        self._test_preds: list[dict[str, torch.Tensor]] = []
        self._test_targets: list[dict[str, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, x: torch.Tensor, targets: torch.Tensor) -> DetectionLoss:
        outputs = self.model(x)
        priors = self.model.priors(x.shape[-1], x.device) if x.shape[-1] == x.shape[-2] else None
        if priors is None or len(priors) != outputs.shape[1]:
            raise ValueError(f"detector input must be square, got {tuple(x.shape[-2:])}")
        return yolox_loss(outputs, targets, priors, self.iou_class_targets)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, targets = batch
        loss = self._loss(x, targets)
        self.watch_loss(loss.total, batch_idx)
        self.train_loss.update(loss.total.detach() * len(x), len(x))
        return loss.total

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, targets = batch
        self.val_loss.update(self._loss(x, targets).total * len(x), len(x))

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_count:
            self.log("val_loss", self.val_loss.compute(), prog_bar=True, sync_dist=False, logger=False)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._switch_mixing(len(self.history))  # a resumed fit's first batch is drawn before its epoch starts

    def on_train_epoch_start(self) -> None:
        self._switch_mixing(self.current_epoch)

    def _switch_mixing(self, epoch: int) -> None:
        """Mosaic and mix-up off for the last ``no_aug_epochs`` epochs (YOLOX's recipe)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.no_aug_epochs and datamodule is not None and hasattr(datamodule, "set_mixing"):
            datamodule.set_mixing(mixes(epoch, self.max_epochs, self.no_aug_epochs))

    def on_train_epoch_end(self) -> None:
        validated = bool(self.val_loss.update_count)
        row = self.end_epoch(self.train_loss.compute(), val_loss=self.val_loss.compute() if validated else None)
        self.log("train_loss", row["train_loss"], prog_bar=True, logger=False)
        for metric in (self.train_loss, self.val_loss):
            metric.reset()

    def on_test_epoch_start(self) -> None:
        self._test_preds, self._test_targets = [], []

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, targets = batch
        preds = postprocess(self.model(x).float())
        truth = as_target_dicts(targets)
        self.test_metrics["map"].update(preds, truth)
        self._test_preds += [{k: v.cpu() for k, v in p.items()} for p in preds]
        self._test_targets += [{k: v.cpu() for k, v in t.items()} for t in truth]

    def on_test_epoch_end(self) -> None:
        ap = self.test_metrics["map"].compute()
        self.test_metrics["map"].reset()
        counts = matched_counts(self._test_preds, self._test_targets, self.num_classes)
        confusion, missed = face_confusion(self._test_preds, self._test_targets, self.num_classes)
        faces = int(sum(len(t["labels"]) > 0 for t in self._test_targets))
        self.test_results = {
            "map50": float(ap["map_50"]),
            "map50_95": float(ap["map"]),
            **recall_precision_f1(counts),
            # the expression named for each face by the best detection on it, over all faces (a miss is wrong)
            "accuracy": float(confusion.diag().sum()) / max(faces, 1),
            "faces_missed": missed,
            "fps": self._frames_per_second(),
            "confusion": confusion,
        }

    def _frames_per_second(self) -> float:
        """Batch 1, network + decoding + NMS, on the device the test ran on (warm-up excluded), as the paper's
        frame rate. Measured here because Lightning moves the module back to the CPU after testing."""
        pipeline = DetectionPipeline(self.model)
        fps = frames_per_second(pipeline, self.input_size, self.in_chans, str(self.device), self.fps_seconds)
        self.model.eval()
        return round(fps, 1)

    def test_row(self, classes: list[str]) -> dict[str, float]:
        """The record's metric columns (the confusion matrix is written on its own)."""
        row = {k: v for k, v in self.test_results.items() if k != "confusion"}
        row["score_threshold"] = SCORE_THRESHOLD
        row["size_kb"] = math.ceil(sum(p.numel() for p in self.model.parameters()) * 4 / 1024)
        matrix = self.test_results["confusion"]
        totals = matrix.sum(1).clamp(min=1)
        row.update({f"recall_{c}": float(matrix[i, i] / totals[i]) for i, c in enumerate(classes)})
        return row
