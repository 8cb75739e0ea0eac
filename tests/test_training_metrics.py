"""ImageMean: the per-epoch training and validation means of loss and accuracy."""

import pytest
import torch

from ferbench.training.lightning.module import _correct
from ferbench.training.metrics import ImageMean, flatten
from ferbench.training.metrics import test_metrics as make_test_metrics


def test_image_mean_weighs_batches_by_their_images():
    values = torch.tensor([0.5, 1.5, 2.0, 4.0, 0.0, 1.0, 3.0])
    metric = ImageMean()
    for batch in (values[:4], values[4:6], values[6:]):  # uneven batches: a plain mean of batch means is 1.83
        metric.update(batch.mean() * len(batch), len(batch))
    assert torch.isclose(metric.compute(), values.mean())


def test_image_mean_of_correct_counts_is_micro_accuracy():
    logits = torch.tensor([[2.0, 0.1], [0.2, 1.0], [3.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1, 1])
    metric = ImageMean()
    metric.update(_correct(logits[:2], labels[:2]), 2)
    metric.update(_correct(logits[2:], labels[2:]), 3)
    assert float(metric.compute()) == pytest.approx(3 / 5)
    metric.reset()
    metric.update(_correct(logits, labels), 5)
    assert float(metric.compute()) == pytest.approx(3 / 5)


def test_weighted_metrics_weigh_classes_by_their_images_and_macro_ones_do_not():
    """Imbalanced labels, a model that favours class 0: weighted recall = accuracy, macro recall below it."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 30 + [1] * 6 + [2] * 4)
    probs = torch.softmax(torch.randn(40, 3, generator=generator) + torch.tensor([1.5, 0.0, 0.0]), dim=1)
    metrics = make_test_metrics(3)
    metrics.update(probs, labels)
    row = flatten(metrics.compute(), ["a", "b", "c"])
    correct = probs.argmax(dim=1) == labels
    assert row["accuracy"] == pytest.approx(float(correct.float().mean()))
    assert row["recall_weighted"] == pytest.approx(row["accuracy"])
    per_class = [float(correct[labels == k].float().mean()) for k in range(3)]
    assert row["recall"] == pytest.approx(sum(per_class) / 3)
    assert row["recall"] < row["recall_weighted"]
