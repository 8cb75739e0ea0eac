"""What ``ferbench datasets`` shows: for every data config, where it looks, whether the data is there,
and its images per class and official split (paper 000's Table 1 is such a count)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

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


def data_configs(conf_dir: Path | None = None, data_root: Path | str | None = None) -> dict[str, dict]:
    """Every ``conf/data/*.yaml``, with ``${data_root}`` resolved."""
    conf_dir = Path(conf_dir) if conf_dir else config_dir()
    root = str(data_root if data_root is not None else default_data_root())
    out = {}
    for path in sorted((conf_dir / "data").glob("*.yaml")):
        data = _with_defaults(path)
        cfg = OmegaConf.merge(OmegaConf.create({"data_root": root}), OmegaConf.create({"data": data}))
        out[path.stem] = OmegaConf.to_container(cfg.data, resolve=True)
    return out


def _with_defaults(path: Path) -> DictConfig:
    """A data YAML with its ``defaults`` (sibling configs, as Hydra reads them) merged in, for use without Hydra."""
    own = OmegaConf.load(path)
    defaults = own.pop("defaults", None) or ["_self_"]
    merged = OmegaConf.create()
    for entry in defaults:
        part = own if entry == "_self_" else _with_defaults(path.with_name(f"{entry}.yaml"))
        merged = OmegaConf.merge(merged, part)
    if "_self_" not in defaults:
        merged = OmegaConf.merge(merged, own)
    return merged


def load_from_config(cfg: dict) -> DataSource:
    """The DataSource a ``data`` config describes (its classes dropped)."""
    loader = DATASETS.get(cfg["name"])
    root = cfg.get("root")
    source = loader(Path(root) if root is not None else None, **(cfg.get("options") or {}))
    return select_classes(source, cfg.get("drop_classes") or [])


def dataset_status(
    data_root: Path | str | None = None, conf_dir: Path | None = None, include: list[str] | None = None
) -> list[DatasetStatus]:
    """Load each configured data set (and each registered one no config names) and count it."""
    configs = data_configs(conf_dir, data_root)
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
