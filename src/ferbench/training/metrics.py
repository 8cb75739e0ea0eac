"""Test metrics from torchmetrics: the columns every run record carries."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

SCALAR_METRICS = ("accuracy", "precision", "recall", "f1", "map")
"""Precision, recall, F1 and mAP are macro averages over classes; accuracy is over images."""


def test_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "map": MulticlassAveragePrecision(num_classes, average="macro"),
            "class_recall": MulticlassRecall(num_classes, average="none"),
            "confusion": MulticlassConfusionMatrix(num_classes),
        }
    )


def flatten(results: dict[str, torch.Tensor], classes: list[str]) -> dict[str, float]:
    """Scalars as they are, per-class recall as ``recall_<class>``; the confusion matrix stays out."""
    row = {name: float(results[name]) for name in SCALAR_METRICS}
    row.update({f"recall_{c}": float(v) for c, v in zip(classes, results["class_recall"], strict=True)})
    return row
