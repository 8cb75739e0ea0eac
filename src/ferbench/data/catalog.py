"""What ``ferbench datasets`` shows: for every data config, where it looks, whether the data is there,
and its images per class and official split (paper 000's Table 1 is such a count)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ferbench.data.base import DATASETS, DataSource, select_classes
from ferbench.errors import FerbenchError
from ferbench.paths import config_dir, default_data_root


@dataclass
class DatasetStatus:
    config: str
    """Name of the ``conf/data/<config>.yaml`` (or the loader's name when no config uses it)."""
    dataset: str
    root: str | None
    present: bool
    n_images: int = 0
    counts: pd.DataFrame | None = None
    """Class x official split (``DataSource.class_counts``)."""
    skipped: dict[str, int] = field(default_factory=dict)
    error: str = ""
    """Why it is absent or unreadable: the loader's own message (it names the layout and path)."""


def data_configs(data_root: Path | str | None = None, overrides: Sequence[str] = ()) -> dict[str, dict]:
    """Every ``conf/data/*.yaml`` composed as a run would compose it (so ``data_dirs`` and defaults apply)."""
    from hydra import compose, initialize_config_dir

    extra = [*(f"data_root={data_root}" for _ in [0] if data_root is not None), *overrides]
    out = {}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for path in sorted((config_dir() / "data").glob("*.yaml")):
            cfg = compose("config", overrides=[f"data={path.stem}", *extra])
            out[path.stem] = OmegaConf.to_container(cfg.data, resolve=True)
    return out


def load_from_config(cfg: dict) -> DataSource:
    """The DataSource a ``data`` config describes (its classes dropped)."""
    loader = DATASETS.get(cfg["name"])
    root = cfg.get("root")
    source = loader(Path(root) if root is not None else None, **(cfg.get("options") or {}))
    return select_classes(source, cfg.get("drop_classes") or [])


def dataset_status(
    data_root: Path | str | None = None, overrides: Sequence[str] = (), include: list[str] | None = None
) -> list[DatasetStatus]:
    """Load each configured data set (and each registered one no config names) and count it."""
    configs = data_configs(data_root, overrides)
    base = Path(data_root if data_root is not None else default_data_root())
    for name in DATASETS.names():
        if not any(c["name"] == name for c in configs.values()):
            configs[name] = {"name": name, "root": str(base / name), "options": {}, "drop_classes": []}
    statuses = []
    for config, cfg in configs.items():
        if include is not None and config not in include:
            continue
        root = cfg.get("root")
        try:
            source = load_from_config(cfg)
        except (FerbenchError, KeyError, TypeError) as exc:
            statuses.append(DatasetStatus(config, cfg["name"], root, False, error=str(exc).strip("'\"")))
            continue
        statuses.append(
            DatasetStatus(config, cfg["name"], root, True, len(source), source.class_counts(), dict(source.skipped))
        )
    return statuses


def status_table(statuses: list[DatasetStatus]) -> pd.DataFrame:
    """One row per config: where, whether, how many, per split; the long per-class counts are in ``counts``."""
    rows = []
    for s in statuses:
        row = {"config": s.config, "dataset": s.dataset, "root": s.root, "present": s.present, "images": s.n_images}
        if s.counts is not None:
            row.update({f"n_{split}": int(n) for split, n in s.counts.sum(axis=0).items()})
            row["classes"] = len(s.counts)
        row["skipped"] = ", ".join(f"{k}={v}" for k, v in s.skipped.items())
        row["error"] = s.error
        rows.append(row)
    return pd.DataFrame(rows)


def class_table(statuses: list[DatasetStatus]) -> pd.DataFrame:
    """Long form: config, class, split, count; pivot it for a paper's Table 1."""
    frames = []
    for s in statuses:
        if s.counts is None:
            continue
        long = s.counts.rename_axis(index="class", columns="split").stack().rename("count").reset_index()
        frames.append(long.assign(config=s.config)[["config", "class", "split", "count"]])
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["config", "class", "split", "count"])
    )
