"""Mix-up (aug.mixup, paper 000's input stage): a batch transform in the training step with its labels mixed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ferbench.errors import ConfigError
from ferbench.training.lightning.module import FERModule
from ferbench.training.losses import build_loss
from ferbench.training.mixup import MixUp, build_mixup, mix_batch, mixed_loss


def _drawn_permutation(seed: int, n: int) -> torch.Tensor:
    """The permutation ``mix_batch`` draws after ``torch.manual_seed(seed)`` (one uniform for p, then the perm)."""
    torch.manual_seed(seed)
    torch.rand(())
    return torch.randperm(n)


def test_mixed_batch_blends_images_and_the_loss_is_the_soft_label_cross_entropy():
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    perm = _drawn_permutation(3, 6)
    torch.manual_seed(3)
    mixed, (other, ratio) = mix_batch(x, y, MixUp(p=1.0, ratio=0.3))
    assert ratio == 0.3 and torch.equal(other, y[perm])
    assert torch.allclose(mixed, 0.7 * x + 0.3 * x[perm])
    logits = torch.randn(6, 3)
    soft = 0.7 * F.one_hot(y, 3) + 0.3 * F.one_hot(other, 3)
    expected = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert float(mixed_loss(F.cross_entropy, logits, y, (other, ratio))) == pytest.approx(float(expected), abs=1e-6)


def test_no_mixup_leaves_the_batch_and_loss_alone():
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    for mixup in (None, MixUp(p=0.0)):
        same, partner = mix_batch(x, y, mixup)
        assert same is x and partner is None
    assert build_mixup(None) is None and build_mixup({"p": 0.0}) is None
    with pytest.raises(ConfigError, match="aug.mixup"):
        build_mixup({"p": 1.5})


def test_training_step_mixes_when_aug_says_so():
    """The module's step with mix-up at p=1 trains on blended images against both labels."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    loss = build_loss(OmegaConf.create({"name": "ce", "head": "linear", "class_weights": None}), [0, 1], 2)
    module = FERModule(model, loss, OmegaConf.create({}), num_classes=2, max_epochs=1)
    module.mixup = MixUp(p=1.0, ratio=0.5)
    x, y = torch.randn(8, 1, 2, 2), torch.tensor([0, 1] * 4)
    perm = _drawn_permutation(5, 8)
    torch.manual_seed(5)
    step_loss = module.training_step((x, y), 0)
    out = model(0.5 * x + 0.5 * x[perm])
    expected = 0.5 * F.cross_entropy(out, y) + 0.5 * F.cross_entropy(out, y[perm])
    assert float(step_loss) == pytest.approx(float(expected), abs=1e-6)
