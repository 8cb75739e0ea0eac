"""Test metrics from torchmetrics: the columns every run record carries; the per-epoch training means."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

SCALAR_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "map",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
)
"""``precision``, ``recall``, ``f1`` and ``map`` are macro averages over classes; the ``_weighted`` ones weight each
class by its test images (amdcnn Table 3 prints these: its recall equals its accuracy); accuracy is over images."""


def test_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "map": MulticlassAveragePrecision(num_classes, average="macro"),
            "precision_weighted": MulticlassPrecision(num_classes, average="weighted"),
            "recall_weighted": MulticlassRecall(num_classes, average="weighted"),
            "f1_weighted": MulticlassF1Score(num_classes, average="weighted"),
            "class_recall": MulticlassRecall(num_classes, average="none"),
            "confusion": MulticlassConfusionMatrix(num_classes),
        }
    )


def flatten(results: dict[str, torch.Tensor], classes: list[str]) -> dict[str, float]:
    """Scalars as they are, per-class recall as ``recall_<class>``; the confusion matrix stays out."""
    row = {name: float(results[name]) for name in SCALAR_METRICS}
    row.update({f"recall_{c}": float(v) for c, v in zip(classes, results["class_recall"], strict=True)})
    return row


class ImageMean(Metric):
    """A mean over images of per-batch sums: ``update(batch_sum, images)``, ``compute() = sum / images``.

    One in-place add per state and step. torchmetrics' ``MeanMetric`` builds a weight tensor, broadcasts,
    casts and multiplies on every update (about ten kernels per step on a GPU, where a small model's step
    is bound by how fast the host issues kernels). Summed over DDP ranks like any torchmetrics state.
    """

    full_state_update = False
    total: torch.Tensor
    images: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, batch_sum: torch.Tensor, images: int) -> None:
        self.total += batch_sum
        self.images += images  # a Python number: no host-to-device copy, so no wait for the device

    def compute(self) -> torch.Tensor:
        return self.total / self.images
