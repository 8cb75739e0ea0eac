"""ImageMean: the per-epoch training and validation means of loss and accuracy."""

import pytest
import torch

from ferbench.training.metrics import ImageMean
from ferbench.training.module import _correct


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
