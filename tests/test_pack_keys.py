"""Every key of a run's id means the same packed and solo: honoured by the pack, or the run trains alone, saying why."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from ferbench.paths import config_dir
from ferbench.run import run
from ferbench.training.packed import keys as pack_keys
from ferbench.training.packed.keys import EXECUTION_ONLY_TRAINER, PACK_HONOURED_TRAINER, identity_gap
from ferbench.training.packed.trainer import PackedTrainer

PACKED_2 = ["model.drop_rate=0", "split=kfold", "split.k=2", "trainer.pack=2"]
"""simplecnn without dropout, two folds, packs of two: these folds pack on a CPU (test_packed.py's NO_DROPOUT)."""


@pytest.fixture
def torch_numerics():
    """Put the process-wide settings the tests change back as they were."""
    saved = (
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.use_deterministic_algorithms(saved[1])
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[2], saved[3]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


def _trainer_keys() -> set[str]:
    """Every trainer key any shipped trainer choice sets."""
    keys: set[str] = set()
    for path in (config_dir() / "trainer").glob("*.yaml"):
        keys |= set(OmegaConf.load(path)) - {"defaults"}
    return keys


def test_every_trainer_key_is_honoured_by_packs_or_execution_only():
    """A trainer key added to the config is read by Lightning in solo runs; unless it is listed here a pack would
    drop it without a word (issue 32). List it in ``PACK_HONOURED_TRAINER`` once the packed loop applies it, or keep
    it out of the run id (``IDENTITY_EXCLUDED``) if it changes only speed."""
    assert "matmul_precision" in _trainer_keys() and "deterministic" in _trainer_keys()
    unlisted = _trainer_keys() - set(PACK_HONOURED_TRAINER) - set(EXECUTION_ONLY_TRAINER)
    assert not unlisted, f"trainer keys neither honoured by packs nor execution-only: {sorted(unlisted)}"
    assert not set(PACK_HONOURED_TRAINER) & set(EXECUTION_ONLY_TRAINER)


def test_a_trainer_key_the_pack_does_not_apply_refuses_the_pack(make_cfg):
    assert identity_gap(make_cfg()) is None
    assert identity_gap(make_cfg("trainer=fast_gpu")) is None
    assert identity_gap(make_cfg("+trainer.new_key=null")) is None  # absent and null: the same run id's meaning
    why = identity_gap(make_cfg("+trainer.new_key=3"))
    assert why and why.startswith("trainer.new_key=3 is in the run id")


def test_a_new_top_level_identity_key_refuses_the_pack(make_cfg):
    why = identity_gap(make_cfg("+schedule=cosine"))
    assert why and why.startswith("schedule in the run id")


def _record_numerics(monkeypatch) -> list[tuple[str, bool]]:
    """What matmul precision and deterministic mode each pack trained under."""
    seen: list[tuple[str, bool]] = []
    real = PackedTrainer.train

    def train(self):
        seen.append((torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled()))
        return real(self)

    monkeypatch.setattr(PackedTrainer, "train", train)
    return seen


def test_packed_run_trains_under_its_matmul_precision_and_deterministic_mode(make_cfg, monkeypatch, torch_numerics):
    """Both keys are in the run id; before, only ``build_trainer`` applied them, so a pack trained under the
    process's settings (``highest``, not deterministic) while its id said otherwise."""
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(False)
    seen = _record_numerics(monkeypatch)
    record = run(make_cfg(*PACKED_2, "trainer.deterministic=true", "trainer.matmul_precision=high"))
    assert set(record.metrics["packed"]) == {2}
    assert seen == [("high", True)]


def test_a_pack_after_a_deterministic_run_is_not_left_deterministic(make_cfg, monkeypatch, torch_numerics):
    torch.set_float32_matmul_precision("medium")
    torch.use_deterministic_algorithms(True)  # as a deterministic solo run in this process leaves it
    seen = _record_numerics(monkeypatch)
    run(make_cfg(*PACKED_2))
    assert seen == [("highest", False)]


def test_an_unhonoured_trainer_key_trains_alone_and_the_record_says_why(make_cfg, monkeypatch, torch_numerics):
    """The refusal path, as a trainer key the pack did not apply would take it."""
    honoured = {k: v for k, v in PACK_HONOURED_TRAINER.items() if k != "deterministic"}
    monkeypatch.setattr(pack_keys, "PACK_HONOURED_TRAINER", honoured)
    record = run(make_cfg(*PACKED_2, "trainer.deterministic=true"))
    assert set(record.metrics["packed"]) == {1}
    assert all(note.startswith("not packed: trainer.deterministic=True") for note in record.metrics["pack_note"])


@pytest.mark.parametrize(
    ("value", "enabled", "warn_only"), [(True, True, False), ("warn", True, True), (False, False, False)]
)
def test_apply_numerics_sets_what_lightnings_deterministic_flag_sets(value, enabled, warn_only, torch_numerics):
    from ferbench.training.process import apply_numerics

    apply_numerics(OmegaConf.create({"deterministic": value, "matmul_precision": "medium", "cudnn_benchmark": True}))
    assert torch.are_deterministic_algorithms_enabled() is enabled
    assert torch.is_deterministic_algorithms_warn_only_enabled() is warn_only
    assert torch.get_float32_matmul_precision() == "medium"
    assert torch.backends.cudnn.benchmark is not enabled  # deterministic turns cuDNN's timing off, as Lightning
