"""A detector's test metrics beside torchmetrics' mAP: recall, precision and F1 at a score threshold, and the
expression confusion of the faces (padded targets in, per-image dicts as torchmetrics takes them)."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

SCORE_THRESHOLD = 0.5
"""Score (objectness x class probability) a detection needs to count for recall, precision and F1: the
threshold of the YOLOX-PyTorch evaluation (bubbliiiing/yolox-pytorch ``get_map.py``, score_threhold 0.5) that
papers of paper 000's kind report. mAP uses every detection (threshold 0.001)."""


MATCH_IOU = 0.5


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
