"""Shared fixtures: compose the real configs with Hydra's compose API, small and fast."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ferbench.paths import config_dir

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

FAST = [
    "trainer.max_epochs=1",
    "trainer.batch_size=32",
    "trainer.progress_bar=false",
    "data.options.n_train=140",
    "data.options.n_test=70",
]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=simplecnn", ...)`` -> the composed config, results and cache under tmp_path."""

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        base = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}"]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("config", overrides=[*base, *(FAST if fast else []), *overrides])

    return make


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the checkout; tests using it skip cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA
