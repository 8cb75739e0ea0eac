"""Speed options change how fast, not what: each gives the same predictions (or augmentation distributions)."""

from __future__ import annotations

import os

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from ferbench.config import validate
from ferbench.data.datamodule import FERDataModule, resolve_num_workers
from ferbench.data.splits import Fold
from ferbench.data.synthetic import generate
from ferbench.data.transforms import BatchAugment, Pipeline, build_augmentation, normalize_batch, to_tensor
from ferbench.errors import ConfigError
from ferbench.factory import build_model
from ferbench.models import create_model
from ferbench.training.lightning.module import FERModule
from ferbench.training.lightning.trainer import build_trainer
from ferbench.training.losses import build_loss

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray]:
    images, labels = generate(64, 48, seed=3)
    return images[..., None], labels


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("simplecnn", num_classes=7, in_chans=1).eval()


def test_normalize_batch_is_to_tensor_in_either_layout(faces):
    images = torch.from_numpy(faces[0])
    expected = to_tensor(faces[0])
    plain = normalize_batch(images)
    nhwc = normalize_batch(torch.from_numpy(np.repeat(faces[0], 3, axis=-1)), channels_last=True)
    assert torch.equal(plain, expected) and plain.is_contiguous()
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and nhwc.shape == (64, 3, 48, 48)
    assert torch.equal(nhwc[:, :1], expected)


def _test_probs(cfg, faces) -> torch.Tensor:
    """Test-class probabilities of a seeded, untrained model through ferbench's own trainer and data module."""
    images, labels = faces
    rows = np.arange(len(images))
    torch.manual_seed(0)
    module = FERModule(build_model(cfg, 7), build_loss(cfg.loss, labels, 7), cfg.optim, 7, 1)
    datamodule = FERDataModule(images, labels, Fold(0, rows, rows[:0], rows), None, 16)
    build_trainer(cfg, None, has_val=False).test(module, datamodule=datamodule, verbose=False)
    return torch.cat(module.test_probs)


@pytest.mark.parametrize("option", ["trainer.channels_last=true", "trainer.precision=bf16-mixed"])
def test_speed_option_keeps_the_test_predictions(make_cfg, faces, option):
    """ferbench's SpeedOptions / precision path against its plain path: the same predictions (bf16: nearly)."""
    expected, got = _test_probs(make_cfg(), faces), _test_probs(make_cfg(option), faces)
    if "bf16" in option:
        assert (got - expected).abs().max() <= 0.05
        assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.9
    else:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compile_model_keeps_keys_and_predictions_and_compiles_the_aux_forward(faces):
    """ferbench's ``compile_model``: in place, state-dict keys unchanged, the training forward compiled too."""
    from ferbench.training.lightning.callbacks import compile_model

    x = to_tensor(faces[0])
    torch.manual_seed(0)
    model = create_model("amdcnn", num_classes=7, in_chans=1).eval()
    keys = list(model.state_dict())
    with torch.no_grad():
        expected = model(x)
        compile_model(model)
        got = model(x)
    assert model._compiled_call_impl is not None and "forward_with_aux" in vars(model)
    assert list(model.state_dict()) == keys  # checkpoints keep their keys
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_speed_options_reach_model_and_batches(make_cfg, faces):
    """channels_last, gpu_augment and bf16-mixed through build_trainer: one short fit on the CPU."""
    cfg = make_cfg(
        "trainer.channels_last=true", "trainer.gpu_augment=true", "trainer.precision=bf16-mixed", "aug=amdcnn"
    )
    images, labels = faces
    module = FERModule(build_model(cfg, 7), build_loss(cfg.loss, labels, 7), cfg.optim, 7, 1)
    rows = np.arange(len(images))
    datamodule = FERDataModule(images, labels, Fold(0, rows, rows[:0], rows), build_augmentation(cfg.aug.train), 16)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return x

    module.model.features.insert(0, Spy())
    trainer = build_trainer(cfg, None, has_val=False, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    conv = module.model.features[2][0].weight  # the second conv block's (the first has one input channel)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert datamodule.augment is None and isinstance(datamodule.device_augment, BatchAugment)
    assert seen and all(x.dtype == torch.float32 and x.shape == (16, 1, 48, 48) for x in seen)
    assert len(module.history) == 1 and np.isfinite(module.history[0]["train_loss"])


def test_num_workers_auto(make_cfg):
    assert resolve_num_workers("auto", accelerated=False) == 0
    assert 1 <= resolve_num_workers("auto", accelerated=True) <= 4
    assert resolve_num_workers(3, accelerated=False) == 3
    with pytest.raises(ConfigError, match="trainer.num_workers"):
        resolve_num_workers("many", accelerated=True)
    validate(make_cfg("trainer.num_workers=auto"))
    with pytest.raises(ConfigError, match="trainer.num_workers"):
        validate(make_cfg("trainer.num_workers=-1"))


# -------------------------------------------------------------------------------- batched augmentation


def _copies_cpu(compose: A.Compose, image: np.ndarray, n: int) -> torch.Tensor:
    compose.set_random_seed(0)
    out = np.stack([compose(image=image)["image"].reshape(image.shape) for _ in range(n)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


def _copies_batched(compose: A.Compose, image: np.ndarray, n: int) -> torch.Tensor:
    torch.manual_seed(0)
    batch = torch.from_numpy(np.repeat(image[None], n, axis=0))
    return normalize_batch(batch, 0.0, 1.0, augment=BatchAugment.from_albumentations(compose))


def _distance(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean absolute difference of the per-pixel means and of the per-pixel standard deviations."""
    return float((a.mean(0) - b.mean(0)).abs().mean()), float((a.std(0) - b.std(0)).abs().mean())


PIPELINES = {
    "basic": None,
    "amdcnn": None,
    "lightvgg": None,
    "shufflecsp": None,
    "yoloxnano": None,
    "resized_crop": [A.RandomResizedCrop(size=(48, 48), scale=(0.5, 1.0), p=1.0)],
    "brightness_contrast": [A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=0.8), A.Affine(rotate=(-20, 20))],
    "shift_scale_rotate_pad": [A.ShiftScaleRotate(p=0.8), A.CropAndPad(percent=(0.0, 0.15), p=0.6)],
}
N_COPIES = 1500
TOLERANCE = 0.01  # [0, 1] units; two independent 1500-copy estimates of one distribution differ by 0.002-0.005


def _pipeline(name: str, make_cfg) -> A.Compose:
    steps = PIPELINES[name]
    if steps is None:
        return build_augmentation(make_cfg(f"aug={name}").aug.train)
    return Pipeline(steps)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_batched_augmentation_matches_albumentations(name, make_cfg, faces):
    compose = _pipeline(name, make_cfg)
    image = faces[0][5]
    cpu = _copies_cpu(compose, image, N_COPIES)
    batched = _copies_batched(compose, image, N_COPIES)
    assert batched.shape == cpu.shape
    mean_gap, std_gap = _distance(cpu, batched)
    assert mean_gap < TOLERANCE and std_gap < TOLERANCE, (mean_gap, std_gap)


def test_the_comparison_notices_a_wrong_distribution(faces):
    """The tolerance has teeth: a shift range off by a factor of two, or a flip rate of 0.3 for 0.5, fails it."""
    image = faces[0][5]
    cpu = _copies_cpu(Pipeline([A.Affine(translate_percent=(-0.06, 0.06), p=1.0)]), image, N_COPIES)
    wrong = _copies_batched(Pipeline([A.Affine(translate_percent=(-0.12, 0.12), p=1.0)]), image, N_COPIES)
    assert max(_distance(cpu, wrong)) > 2 * TOLERANCE
    cpu = _copies_cpu(Pipeline([A.HorizontalFlip(p=0.5)]), image, N_COPIES)
    wrong = _copies_batched(Pipeline([A.HorizontalFlip(p=0.3)]), image, N_COPIES)
    assert max(_distance(cpu, wrong)) > 2 * TOLERANCE


def test_seeded_pipeline_draws_its_transforms_independently():
    """albumentations' Compose.set_random_seed gives every transform the same stream: both flips or neither."""
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    pipeline = Pipeline([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    pipeline.set_random_seed(0)
    corners = [int(pipeline(image=image)["image"][0, 0, 0]) for _ in range(2000)]
    counts = np.bincount(corners, minlength=16)[[0, 3, 12, 15]]  # none, h, v, both
    assert counts.sum() == 2000 and counts.min() > 400
    again = Pipeline([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    again.set_random_seed(0)
    assert [int(again(image=image)["image"][0, 0, 0]) for _ in range(2000)] == corners  # still reproducible


@pytest.mark.parametrize("flip", [A.HorizontalFlip, A.VerticalFlip])
def test_flip_rate_and_exactness(flip, faces):
    image = faces[0][7]
    batched = _copies_batched(Pipeline([flip(p=0.3)]), image, 4000)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    flipped = x.flip(-1 if flip is A.HorizontalFlip else -2)
    is_flipped = (batched - flipped).abs().amax(dim=(1, 2, 3)) < 1e-4
    is_same = (batched - x).abs().amax(dim=(1, 2, 3)) < 1e-4
    assert bool((is_flipped | is_same).all())
    assert abs(float(is_flipped.float().mean()) - 0.3) < 0.03


def test_unsupported_transforms_fail_naming_them():
    with pytest.raises(ConfigError, match="albumentations.GaussianBlur has no batched version; supported: Affine"):
        BatchAugment.from_albumentations(Pipeline([A.HorizontalFlip(), A.GaussianBlur()]))
    with pytest.raises(ConfigError, match=r"Affine\(border_mode=4\)"):
        BatchAugment.from_albumentations(Pipeline([A.Affine(rotate=(-5, 5), border_mode=cv2.BORDER_REFLECT_101)]))


def test_keep_freed_memory_applies_on_glibc_and_training_still_matches():
    """mallopt only changes where freed memory goes: a model's outputs are the same before and after."""
    import platform

    from ferbench.training.process import keep_freed_memory

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten())
    x = torch.randn(8, 1, 128, 128)  # 32 MiB of activations: above glibc's default mmap threshold
    before = model(x)
    applied = keep_freed_memory()
    if platform.libc_ver()[0] == "glibc":
        assert applied
    torch.testing.assert_close(model(x), before)


NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, NO_CUDA])]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_bf16_training_follows_eager(make_cfg, faces, device):
    """amdcnn + AM-Softmax under bf16 autocast, compiled and eager: the same first steps' losses, all finite.

    On an H100 with torch 2.11 this combination gave a NaN loss at the second step; on torch 2.14 (CPU) it does
    not. Run ``pytest -m slow`` on a GPU machine to check the CUDA path of the installed torch.
    """
    images, labels = faces
    rows = np.arange(len(images))
    losses = {}
    for compiled in (False, True):
        cfg = make_cfg(
            "model=amdcnn",
            "loss=am_softmax",
            "trainer.precision=bf16-mixed",
            f"trainer.compile={compiled}",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        )
        torch.manual_seed(0)
        module = FERModule(build_model(cfg, 7), build_loss(cfg.loss, labels, 7), cfg.optim, 7, 1)
        seen = []
        module.training_step = _recording(module.training_step, seen)
        datamodule = FERDataModule(images, labels, Fold(0, rows, rows[:0], rows), None, 16, seed=0)
        trainer = build_trainer(cfg, None, has_val=False, max_epochs=1, limit_train_batches=4, limit_val_batches=0)
        trainer.fit(module, datamodule=datamodule)
        assert (module.model._compiled_call_impl is not None) == compiled
        assert ("forward_with_aux" in vars(module.model)) == compiled  # the training forward is compiled too
        losses[compiled] = torch.stack(seen).float().cpu()
    assert torch.isfinite(losses[True]).all(), losses
    torch.testing.assert_close(losses[True], losses[False], rtol=0.05, atol=0.05)


def _recording(step, seen: list):
    def record(batch, batch_idx):
        loss = step(batch, batch_idx)
        seen.append(loss.detach())
        return loss

    return record
