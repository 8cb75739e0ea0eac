"""``model.init`` starts a run from another run's weights; ``model.freeze_epochs`` holds its backbone at first."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ferbench.errors import ConfigError
from ferbench.factory import build_model, seeded_model_and_loss
from ferbench.records.record import experiment_identity, run_id
from ferbench.run import run
from ferbench.training.warm_start import checkpoint_weights, init_source, load_matching

SMALL_YOLOX = ["model=yoloxnano", "model.input_size=64", "trainer.batch_size=16"]


def _best(record) -> str:
    return str(record.run_dir / "fold_0" / "checkpoints" / "best.ckpt")


def test_the_new_options_at_their_off_values_leave_run_ids_as_they_were(make_cfg):
    cfg = make_cfg()
    assert {"init", "freeze_epochs"} & set(experiment_identity(cfg)["model"]) == set()
    # the id this config had before model.init and model.freeze_epochs existed (FAST settings, fingerprint "x")
    assert run_id(cfg, "x") == "simplecnn-none-synthetic-official-s0-eb12648370"
    assert run_id(cfg, "x") == run_id(make_cfg("model.freeze_epochs=0"), "x")
    assert run_id(cfg, "x") != run_id(make_cfg("model.init=some-run"), "x")


def test_a_run_started_from_another_holds_its_best_weights(make_cfg):
    first = run(make_cfg())
    cfg = make_cfg(f"model.init={first.run_id}")
    model, _ = seeded_model_and_loss(cfg, 7, np.arange(7))
    theirs = checkpoint_weights(first.run_dir / "fold_0" / "checkpoints" / "best.ckpt")
    fresh = build_model(make_cfg(), 7)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    assert any(not torch.equal(t, fresh.state_dict()[n]) for n, t in model.state_dict().items())
    assert init_source(f"{first.run_id}/fold_0", first.run_dir.parent.parent) == init_source(
        first.run_id, first.run_dir.parent.parent
    )


def test_tensors_of_another_shape_keep_their_fresh_values(make_cfg):
    first = run(make_cfg())
    model = build_model(make_cfg(), 3)  # a 3-class head cannot take the 7-class one
    report = load_matching(model, first.run_dir / "fold_0" / "checkpoints" / "best.ckpt")
    assert report.loaded and report.left
    assert all(model.state_dict()[n].shape[0] == 3 for n in report.left)
    assert "tensors from" in report.line()


def test_a_weights_file_is_identified_by_its_bytes(make_cfg, tmp_path):
    first = run(make_cfg())
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    shutil.copy(_best(first), a)
    shutil.copy(_best(first), b)
    assert run_id(make_cfg(f"model.init={a}"), "x") == run_id(make_cfg(f"model.init={b}"), "x")
    b.write_bytes(b.read_bytes() + b"\0")
    assert run_id(make_cfg(f"model.init={a}"), "x") != run_id(make_cfg(f"model.init={b}"), "x")


def test_unknown_init_and_a_model_without_backbone_are_errors_that_say_what_to_give(make_cfg):
    with pytest.raises(ConfigError, match="neither a file nor a run"):
        run(make_cfg("model.init=no-such-run"))
    first = run(make_cfg())
    with pytest.raises(ConfigError, match="backbone"):
        run(make_cfg(f"model.init={first.run_id}", "model.freeze_epochs=1", "trainer.max_epochs=2"))


def test_freeze_epochs_keep_the_backbone_at_the_loaded_weights_and_train_the_rest(make_cfg):
    first = run(make_cfg(*SMALL_YOLOX))
    second = run(make_cfg(*SMALL_YOLOX, f"model.init={first.run_id}", "model.freeze_epochs=1"))
    before, after = checkpoint_weights(_best(first)), checkpoint_weights(_best(second))
    params = dict(build_model(make_cfg(*SMALL_YOLOX), 7).named_parameters())
    backbone = [n for n in params if n.startswith("backbone.")]
    rest = [n for n in params if not n.startswith("backbone.")]
    assert backbone and all(torch.equal(before[n], after[n]) for n in backbone)
    assert any(not torch.equal(before[n], after[n]) for n in rest)
