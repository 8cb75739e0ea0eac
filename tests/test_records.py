"""Atomic writes, losses and metrics helpers."""

import numpy as np
import pytest
import torch

from ferbench.results.atomic import write_atomic, write_text
from ferbench.training.losses import AMSoftmax, balanced_class_weights


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text(target, "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_balanced_weights_match_sklearn_formula():
    labels = np.array([0, 0, 0, 1])
    w = balanced_class_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([4 / (3 * 3), 4 / (3 * 1), 0.0]))


def test_am_softmax_margin_raises_loss_and_keeps_argmax():
    cos = torch.tensor([[0.9, 0.1, -0.2], [0.2, 0.5, 0.4]])
    target = torch.tensor([0, 1])
    with_margin = AMSoftmax(scale=10, margin=0.35, learn_scale=False)
    no_margin = AMSoftmax(scale=10, margin=0.0, learn_scale=False)
    assert with_margin(cos, target) > no_margin(cos, target)
    assert torch.equal(with_margin.to_logits(cos).argmax(1), cos.argmax(1))
    assert torch.isclose(with_margin.scale, torch.tensor(10.0))
    learnable = AMSoftmax(scale=10)
    learnable(cos, target).backward()
    assert learnable.log_scale.grad is not None
