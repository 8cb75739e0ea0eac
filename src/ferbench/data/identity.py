"""Which data a run saw, as a short hash that goes into its run id.

Two runs with the same config on different data must never share a record; the same data moved or copied
elsewhere (by any tool, to any machine) must keep its ids. So the fingerprint covers the sample table with
paths relative to the data root (labels, subjects, splits), the class names and the loader's file fingerprint
(each file's relative path and a digest of its bytes, read again whenever its size, mtime, ctime or inode
changes: ``base.stat_key``), never an absolute path.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ferbench.config import plain_dict
from ferbench.data.base import DATASETS, DataSource, select_classes
from ferbench.errors import ConfigError
from ferbench.records.record import run_id

FINGERPRINT_LENGTH = 12


def table_digest(frame: pd.DataFrame) -> str:
    """sha1 of a table's values, row order included (shared with the preprocessing cache key)."""
    values = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes()
    return hashlib.sha1(values).hexdigest()


def relative_paths(paths: pd.Series, root: Path | None) -> pd.Series:
    """Sample paths relative to the data root; in-memory images (no path) stay as they are."""
    if root is None:
        return paths.astype(str)
    base = os.path.abspath(root)
    return paths.map(lambda p: os.path.relpath(os.path.abspath(p), base) if isinstance(p, str) else str(p))


def data_fingerprint(source: DataSource, root: Path | None) -> str:
    """Changes with any file's bytes, label, split or class; not with the location or the files' dates."""
    table = source.samples.assign(path=relative_paths(source.samples["path"], root))
    parts = {
        "name": source.name,
        "classes": list(source.classes),
        "rows": table_digest(table),
        "n": len(table),
        "files": source.fingerprint,
    }
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:FINGERPRINT_LENGTH]
    return f"data-{digest}"  # never all digits or '123e4': a CSV reader must not take it for a number


def data_root(cfg: DictConfig) -> Path | None:
    return Path(cfg.data.root) if cfg.data.get("root") else None


def load_source(cfg: DictConfig) -> DataSource:
    """The data set as configured: its loader, options and dropped classes."""
    try:
        loader = DATASETS.get(cfg.data.name)
    except KeyError as exc:
        raise ConfigError(f"data.name: {exc.args[0]}") from None
    options = plain_dict(cfg.data.get("options"))
    source = loader(root=data_root(cfg), **options)
    return select_classes(source, list(cfg.data.get("drop_classes") or []))


_FINGERPRINTS: dict[str, str] = {}
"""Per process: a table plans many cells on one data config; its listing is read once."""


def fingerprint_of(cfg: DictConfig) -> str:
    """The fingerprint of ``cfg``'s data, loaded once per data config in this process."""
    key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True, default=str)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = data_fingerprint(load_source(cfg), data_root(cfg))
    return _FINGERPRINTS[key]


def run_id_of(cfg: DictConfig) -> str:
    """The run id of ``cfg`` on its data as it is now on disk (what ``run(cfg)`` will use)."""
    return run_id(cfg, fingerprint_of(cfg))
