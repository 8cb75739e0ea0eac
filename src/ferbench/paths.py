"""Where ferbench finds its configs and tables, installed or from a checkout."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped_or_checkout(name: str) -> Path:
    """A wheel ships ``conf``/``experiments`` inside the package; an editable install reads the checkout's."""
    inside = PACKAGE_DIR / name
    if inside.is_dir():
        return inside
    return PACKAGE_DIR.parents[1] / name


def config_dir() -> Path:
    return _shipped_or_checkout("conf")


def experiments_dir() -> Path:
    return _shipped_or_checkout("experiments")


def default_data_root() -> Path:
    """``$FERBENCH_DATA`` if set, else ``./data``: each data set lives in ``<root>/<name>/``."""
    return Path(os.environ.get("FERBENCH_DATA", "data"))


def default_cache_dir() -> Path:
    """Preprocessed-image cache; ``$FERBENCH_CACHE`` overrides."""
    return Path(os.environ.get("FERBENCH_CACHE", Path.home() / ".cache" / "ferbench"))
