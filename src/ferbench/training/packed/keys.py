"""Which keys of a run's identity the packed loop honours: the rest make the run train alone, its record saying why.

A packed run keeps its solo twin's run id, so every key in that id must mean the same in both loops. The optimiser
has its own allow-list (``optim.packed_optimizer_gap``); the other groups are built by the same factory calls in
both loops (model, attention, loss, data, split, augmentation), with their exceptions (mix-up, ``freeze_epochs``)
refused by name in ``probes.unpackable``. The ``trainer`` group is read by Lightning in the solo loop and by
``pack_settings`` in the packed one: a trainer key added to the config and read only by ``build_trainer`` would
reach a solo run and be dropped by a pack, silently (issue 32: ``matmul_precision`` and ``deterministic`` were).
So each trainer key is listed here, honoured or execution-only, and any other trainer key at a value other than
its default refuses the pack.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ferbench.paths import config_dir
from ferbench.records.record import IDENTITY_EXCLUDED, experiment_identity

PACK_HONOURED_TRAINER: dict[str, str] = {
    "name": "the trainer choice's label; nothing trains from it",
    "max_epochs": "PackSettings.max_epochs: each model's epochs and its learning-rate schedule",
    "batch_size": "PackSettings.batch_size: each model's batches, drop_last as the solo loader",
    "early_stopping_patience": "one StoppingRule per model, the rule ValLossStopping applies",
    "early_stopping_min_delta": "the same StoppingRule's min_delta, as ValLossStopping",
    "accelerator": "training_device, as Lightning resolves it",
    "devices": "pack_limit: more than one device never packs",
    "strategy": "pack_limit: DDP never packs",
    "precision": "32-true and bf16-mixed autocast as Lightning's; any other refused by unpackable",
    "limit_train_fraction": "subset_train with the run's seed, as train_solo",
    "gradient_clip_val": "PackedTrainer._clip: by norm, per model, as Lightning's",
    "gpu_augment": "batched on the device as SpeedOptions does; refused by unpackable where aug.train draws",
    "ema_decay": "0 only: any other decay refused by unpackable",
    "matmul_precision": "trainer.apply_numerics before the pack trains, as build_trainer",
    "deterministic": "trainer.apply_numerics before the pack trains, as Lightning's deterministic flag",
}
"""Trainer keys in the run id that the packed loop applies exactly as the solo loop does (or refuses by name)."""

EXECUTION_ONLY_TRAINER = tuple(k.split(".", 1)[1] for k in IDENTITY_EXCLUDED if k.startswith("trainer."))
"""Trainer keys outside the run id (threads, workers, compile, ``pack`` itself): how fast, not what trains."""

BUILT_AS_SOLO = ("model", "attn", "data", "split", "loss", "aug", "seed", "protocol")
"""Identity keys the packed loop gets from the same factory calls as the solo loop (the task's ``pack_member``:
``build_net`` and ``build_augmentation``; the split): honoured by construction; their exceptions are refused in
``unpackable``."""

CHECKED_GROUPS = ("trainer", "optim")
"""Identity keys with their own allow-list: this module's for ``trainer``, ``packed_optimizer_gap`` for ``optim``."""


@cache
def trainer_defaults() -> dict[str, Any]:
    """``conf/trainer/default.yaml``: a trainer key at this value changes nothing the pack would have to do."""
    loaded = OmegaConf.to_container(OmegaConf.load(config_dir() / "trainer" / "default.yaml"), resolve=True)
    return {k: v for k, v in loaded.items() if k != "defaults"}


def trainer_key_gap(cfg: DictConfig) -> str | None:
    """Why a pack cannot honour this run's trainer keys, or None: a key of the run id the pack does not apply,
    at a value other than its default (an unknown key at any value but null)."""
    trainer = experiment_identity(cfg).get("trainer", {})
    defaults = trainer_defaults()
    for key, value in sorted(trainer.items()):
        if key in PACK_HONOURED_TRAINER or value == defaults.get(key):
            continue
        return f"trainer.{key}={value} is in the run id but the packed loop does not apply it"
    return None


def unchecked_identity_keys(cfg: DictConfig) -> list[str]:
    """Top-level identity keys that no list here accounts for (a new config group): each needs a rule first."""
    known = (*BUILT_AS_SOLO, *CHECKED_GROUPS)
    return sorted(k for k in experiment_identity(cfg) if k not in known)


def identity_gap(cfg: DictConfig) -> str | None:
    """Why the packed loop might train another experiment than this run's id names, or None: a top-level key no
    rule covers, or a trainer key it does not apply (the optimiser's keys: ``packed_optimizer_gap``)."""
    if unchecked := unchecked_identity_keys(cfg):
        return f"{', '.join(unchecked)} in the run id: the packed loop has no rule for it"
    return trainer_key_gap(cfg)
