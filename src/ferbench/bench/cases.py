"""The cases ``ferbench bench`` times: a paper model at its input size, channels and augmentation, on
synthetic faces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ferbench.data.synthetic import generate
from ferbench.errors import ConfigError
from ferbench.paths import config_dir

PAPER_CASES = ("amdcnn", "shufflecsp", "lightvgg", "mnv3simam")
FALLBACK_CASE = "simplecnn"
NUM_CLASSES = 7


@dataclass(frozen=True)
class Schedule:
    steps: int  # timed steps
    warmup: int  # untimed steps before them (compilation, cuDNN autotuning, worker start-up)


CASE_SCHEDULES = {
    "amdcnn": Schedule(27, 5),
    "shufflecsp": Schedule(27, 5),
    "lightvgg": Schedule(8, 3),
    "mnv3simam": Schedule(6, 2),
}
"""Defaults sized so that all four cases, ``DEFAULT_REPEATS`` times each, run in about 7 minutes on a 2-core CPU
(a window of 7-20 s per path and repeat); a GPU can take --steps 200."""
DEFAULT_SCHEDULE = Schedule(20, 3)
QUICK_SCHEDULE = Schedule(3, 1)
QUICK_BATCH = 16
DEFAULT_REPEATS = 3
"""Each path is timed this many times, alternating (ferbench, plain, ferbench, ...). Images/s are the fastest
window (a shared machine only ever slows one down); the ratios are the median over the repeats of each
ferbench window against the plain window right after it, which share the machine's state. On this project's
2-core VM single 60 s windows gave lightvgg ratios of 0.90 and 1.01 back to back, and the ratio of two
fastest-of-2 windows still ranged 0.94-1.21 over the four cases, where slow phases fell on one path only."""

MAX_UNIQUE_IMAGES = 1024
PRECISION_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def default_cases() -> list[str]:
    """The papers' models that are registered, else the default model."""
    from ferbench.models import MODELS

    cases = [c for c in PAPER_CASES if c in MODELS]
    return cases or [FALLBACK_CASE]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch")
    return torch.device(device)


def compose_case(name: str, batch_size: int, device: torch.device, overrides: Sequence[str] = ()) -> DictConfig:
    """The run config of one case: ``model=<name>``, its paper's ``aug`` if there is one, the user's overrides last."""
    aug = [f"aug={name}"] if (config_dir() / "aug" / f"{name}.yaml").is_file() else []
    base = [
        f"model={name}",
        *aug,
        f"trainer.batch_size={batch_size}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.progress_bar=false",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def case_images(cfg: DictConfig, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic faces at the case's size as the runner caches them: uint8 N x H x W x C (grey repeated to RGB)."""
    unique = min(n, MAX_UNIQUE_IMAGES)  # drawing a face costs more than training on it at 224 pixels
    images, labels = generate(unique, int(cfg.model.input_size), seed)
    rows = np.arange(n) % unique
    images = np.repeat(images[rows][..., None], int(cfg.model.in_chans), axis=-1)
    return np.ascontiguousarray(images), labels[rows]
