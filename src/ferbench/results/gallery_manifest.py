"""``results/gallery/gallery.yaml``: what each gallery folder holds and how its records were made.

One entry per folder (a ``results_dir`` of its own): its profile, the tables it renders, the ``--only`` keys and
extra command-line overrides its runs were trained with, a title, and the machine that trained it (free text: the
records do not know the CPU). Everything else the gallery page says comes from the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferbench.errors import ConfigError

DEFAULT_MANIFEST = Path("results/gallery/gallery.yaml")
MANIFEST_KEYS = {"home", "data", "scratch", "entries"}
ENTRY_KEYS = {"dir", "profile", "tables", "only", "overrides", "title", "machine"}


@dataclass(frozen=True)
class Entry:
    dir: str
    """The folder, relative to the manifest's: its ``runs/``, and the ``tables/`` etc. rendered from them."""
    profile: str
    tables: tuple[str, ...]
    title: str
    machine: str
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per table, the ``--only`` keys its runs were trained with (what the training command says)."""
    overrides: tuple[str, ...] = ()
    """Command-line overrides the records were made with beyond the profile (``trainer.precision=bf16-mixed``):
    part of each run's id, so rendering needs them too."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    entries: tuple[Entry, ...]
    home: str = "results/gallery"
    """Where the manifest's folder is in the repository: the paths the page's commands print."""
    data: tuple[str, ...] = ()
    """Overrides that find the data sets (``data_root=...``), before each entry's and the command line's."""
    scratch: str = "results/gallery-runs"
    """Where the page's training commands train, before the records are copied into a gallery folder."""

    @property
    def folder(self) -> Path:
        return self.path.parent

    def results_dir(self, entry: Entry) -> Path:
        return self.folder / entry.dir


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _entry(path: Path, i: int, data: Any) -> Entry:
    where = f"{path}: entry {i + 1}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(ENTRY_KEYS))}")
    missing = [k for k in ("dir", "profile", "tables", "title", "machine") if not data.get(k)]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    tables = _strings(f"{where}: tables", data["tables"])
    only = data.get("only") or {}
    if isinstance(only, list):  # one list of keys for every table
        only = {t: only for t in tables}
    if not isinstance(only, dict) or sorted(set(only) - set(tables)):
        raise ConfigError(f"{where}: only must map some of its tables ({', '.join(tables)}) to keys, got {only!r}")
    return Entry(
        dir=str(data["dir"]),
        profile=str(data["profile"]),
        tables=tables,
        title=str(data["title"]).strip(),
        machine=str(data["machine"]).strip(),
        only={t: _strings(f"{where}: only {t}", keys) for t, keys in only.items()},
        overrides=_strings(f"{where}: overrides", data.get("overrides")),
    )


def load_manifest(path: Path = DEFAULT_MANIFEST) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no gallery manifest at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ConfigError(f"{path}: expected a mapping with a list of entries")
    unknown = sorted(set(data) - MANIFEST_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(sorted(MANIFEST_KEYS))}")
    entries = tuple(_entry(path, i, e) for i, e in enumerate(data["entries"]))
    dirs = [e.dir for e in entries]
    if len(set(dirs)) != len(dirs):
        raise ConfigError(f"{path}: two entries share a folder: {sorted(d for d in dirs if dirs.count(d) > 1)[0]}")
    return Manifest(
        path=path,
        entries=entries,
        home=str(data.get("home") or "results/gallery"),
        data=_strings(f"{path}: data", data.get("data")),
        scratch=str(data.get("scratch") or "results/gallery-runs"),
    )
