"""The parts of YOLOX's training recipe ferbench offers as options (issue 22): a warm-up before the scheduler
(``optim.warmup_epochs``), an EMA of the weights evaluated and tested (``trainer.ema_decay``), and the last epochs
without mosaic and mix-up (``aug.no_aug_epochs``). Off by default, and then out of the run id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import fixtures_data as fx
from ferbench.data.detection_transforms import DetectionDataModule, DetectionDataset, MixingSampler, MosaicMixup
from ferbench.errors import ConfigError
from ferbench.factory import LOSS_OPTION_KEYS, loss_options
from ferbench.records.record import OFF_BY_DEFAULT, experiment_identity, run_id
from ferbench.run import run
from ferbench.training.detection.simota import LossOptions
from ferbench.training.lightning.callbacks import weight_average
from ferbench.training.mixup import no_aug_epochs
from ferbench.training.optim import lr_at_epoch
from ferbench.training.packed.probes import unpackable

DETECTOR = ["model=yoloxnano_det", "aug=yoloxnano_det"]


def test_recipe_options_at_their_off_values_leave_run_ids_as_they_were(make_cfg):
    cfg = make_cfg(*DETECTOR)
    identity = experiment_identity(cfg)
    assert "ema_decay" not in identity["trainer"] and "warmup_epochs" not in identity["optim"]
    assert "no_aug_epochs" not in identity["aug"] and "mosaic" in identity["aug"]["detection"]
    assert not set(LOSS_OPTION_KEYS) & set(identity["model"])
    for option in (
        "trainer.ema_decay=0.99",
        "optim.warmup_epochs=5",
        "aug.no_aug_epochs=15",
        "model.iou_class_targets=false",
        "model.center_radius=1.5",
        "model.class_cost=false",
    ):
        assert run_id(make_cfg(*DETECTOR, option), "x") != run_id(cfg, "x"), option


@pytest.mark.parametrize("scheduler", ["none", "cosine", "step"])
def test_warmup_ramps_linearly_then_hands_over_to_the_scheduler(scheduler):
    cfg = OmegaConf.create(
        {"name": "adam", "lr": 0.3, "scheduler": scheduler, "step_size": 2, "gamma": 0.5, "warmup_epochs": 2}
    )
    values = [lr_at_epoch(cfg, 10, e) for e in range(10)]
    assert values[:3] == pytest.approx([0.1, 0.2, 0.3])
    if scheduler == "none":
        assert values[3:] == pytest.approx([0.3] * 7)
    elif scheduler == "step":
        assert values[3:6] == pytest.approx([0.3, 0.15, 0.15])
    else:  # cosine over the 8 epochs after the warm-up
        assert values[6] == pytest.approx(0.15) and values[9] < 0.02


def test_no_aug_keys_skip_mosaic_and_mixup_but_keep_the_image_and_its_box():
    image, target = fx_marked(64, (8, 8, 40, 48))
    images, targets = np.stack([image] * 4), [target] * 4
    data = DetectionDataset(images, targets, np.arange(4), None, MosaicMixup(mosaic=1.0, mixup=1.0))
    mixed = [data[(0, seed, True)][1] for seed in range(5)]
    assert all(len(t) > 1 for t in mixed)  # mosaic and mix-up: several boxes
    for seed in range(5):
        plain_image, plain_target = data[(0, seed, False)]
        np.testing.assert_array_equal(plain_image, image)
        np.testing.assert_array_equal(plain_target, target)


def test_the_sampler_carries_the_switch_read_as_each_key_is_drawn():
    sampler = MixingSampler(6, 2, torch.Generator().manual_seed(0))
    keys = iter(sampler)
    assert next(keys)[2] is True
    sampler.mixing = False
    assert all(flag is False for _, _, flag in keys)
    assert [i for i, _, _ in sampler] != [] and len(sampler) == 6


def test_no_aug_epochs_must_not_be_negative():
    with pytest.raises(ConfigError, match="no_aug_epochs"):
        no_aug_epochs(OmegaConf.create({"no_aug_epochs": -1}))


def test_the_classifier_form_stops_mixing_batches_for_the_last_epochs(make_cfg, monkeypatch):
    import ferbench.training.lightning.module as module

    passed: list[object] = []
    original = module.mix_batch
    monkeypatch.setattr(module, "mix_batch", lambda x, y, mixup: (passed.append(mixup), original(x, y, mixup))[1])
    cfg = make_cfg("aug=yoloxnano", "aug.no_aug_epochs=1", "trainer.max_epochs=2", "data.options.n_train=64")
    run(cfg)
    steps = len(passed) // 2
    assert all(m is not None for m in passed[:steps]) and all(m is None for m in passed[steps:])


def test_ema_decay_out_of_range_is_refused_and_a_pack_trains_such_a_run_alone(make_cfg):
    assert weight_average(OmegaConf.create({"ema_decay": 0})) is None
    for bad in (1.0, -0.5):
        with pytest.raises(ConfigError, match="ema_decay"):
            weight_average(OmegaConf.create({"ema_decay": bad}))
    why = unpackable(make_cfg("trainer.ema_decay=0.9"), net=None)
    assert why is not None and "ema_decay" in why


def test_a_detector_run_warms_up_averages_and_ends_without_mosaic(make_cfg, tmp_path: Path, monkeypatch):
    switches: list[bool] = []
    original = DetectionDataModule.set_mixing
    monkeypatch.setattr(DetectionDataModule, "set_mixing", lambda self, on: (switches.append(on), original(self, on)))
    csv = fx.pasted_faces(tmp_path / "faces", ("happy", "surprise"), 6, size=64)
    cfg = make_cfg(
        *DETECTOR, "model.input_size=64", "data=folder", f"data.root={tmp_path / 'faces' / 'images'}",
        f"data.boxes={csv}", "split=holdout", "split.ratio=0.25", "trainer.max_epochs=3", "trainer.batch_size=4",
        "trainer.early_stopping_patience=0", "optim.lr=0.003", "optim.warmup_epochs=2", "trainer.ema_decay=0.5",
        "aug.no_aug_epochs=1", fast=False,
    )  # fmt: skip
    record = run(cfg)
    assert switches == [True, True, True, False]  # fit start, then epochs 1-3 of 3: the last without
    assert record.history["lr"].tolist() == pytest.approx([0.001, 0.002, 0.003])  # the lr each epoch trained at
    best = torch.load(record.run_dir / "fold_0" / "checkpoints" / "best.ckpt", weights_only=False)
    assert "current_model_state" in best  # the averaged weights are the checkpoint's state_dict (Lightning EMA)
    assert not all(torch.equal(best["state_dict"][k], best["current_model_state"][k]) for k in best["state_dict"])


def fx_marked(size: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A grey image with one bright box (x1, y1, x2, y2) and its (1, 5) target of class 0."""
    image = np.full((size, size, 1), 40, dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 200
    return image, np.array([[0, x1, y1, x2, y2]], dtype=np.float32)


def test_a_loss_option_of_the_wrong_kind_is_a_config_error(make_cfg):
    assert loss_options(make_cfg(*DETECTOR, "model.center_radius=1.5").model).center_radius == 1.5
    with pytest.raises(ConfigError, match="model.class_cost='no': expected a bool"):
        loss_options(make_cfg(*DETECTOR, "model.class_cost=no").model)


def test_the_loss_options_off_values_in_the_run_id_rule_are_their_defaults():
    # OFF_BY_DEFAULT (records) states LossOptions' defaults again: a default changed in one place only would put
    # every detector's default into its run id, or leave a changed loss out of it.
    defaults = LossOptions()
    assert {key: OFF_BY_DEFAULT[f"model.{key}"] for key in LOSS_OPTION_KEYS} == {
        key: getattr(defaults, key) for key in LOSS_OPTION_KEYS
    }
