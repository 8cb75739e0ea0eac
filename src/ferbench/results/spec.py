"""A paper's table as data: ``experiments/<paper>/<table>.yaml`` -> ``TableSpec`` (format: experiments/README.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ferbench.errors import ConfigError
from ferbench.paths import experiments_dir

Kind = Literal["runs", "confusion", "layers", "counts"]
KINDS = ("runs", "confusion", "layers", "counts")
TABLE_KEYS = {
    "paper",
    "table",
    "title",
    "source",
    "kind",
    "metric",
    "paper_scale",
    "seeds",
    "base",
    "profiles",
    "profile_notes",
    "notes",
    "columns",
    "rows",
    "classes",
    "overrides",
    "stats",
    "claims",
    "figures",
    "paper_matrix",
    "paper_patience",
    "equivalence_margin",
}
ROW_KEYS = {"key", "label", "overrides", "paper", "cited", "metric", "note"}
COLUMN_KEYS = {"key", "label", "overrides", "metric"}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    overrides: tuple[str, ...] = ()
    metric: str | None = None


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    overrides: tuple[str, ...] = ()
    paper: dict[str, Any] = field(default_factory=dict)
    cited: bool = False
    metric: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class StatTest:
    """An independent-samples t-test between two rows' per-run values in each column."""

    name: str
    a: str
    b: str
    metric: str = "accuracy"


CLAIM_KEYS = {"better", "than", "columns", "rows", "metric", "source", "lower_is_better"}


@dataclass(frozen=True)
class Claim:
    """'``better`` beats ``than``', as the paper states it (``source`` says where).

    Between two rows in each of ``columns`` (an ablation's "X improves on Y"), or, with ``rows``, between
    two columns in each of those rows (a protocol against another: select-on-test against validation).
    """

    better: str
    than: str
    source: str
    columns: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()
    metric: str | None = None
    lower_is_better: bool = False

    @property
    def across_columns(self) -> bool:
        return bool(self.rows)

    def label(self) -> str:
        return f"{self.better} {'<' if self.lower_is_better else '>'} {self.than}"


@dataclass
class TableSpec:
    paper: str
    table: str
    title: str
    path: Path
    kind: Kind = "runs"
    source: str = ""
    metric: str = "accuracy"
    paper_scale: float = 100.0
    seeds: tuple[int, ...] = (0,)
    base: tuple[str, ...] = ()
    profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    rows: tuple[Row, ...] = ()
    classes: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    paper_values: Any = None
    stats: tuple[StatTest, ...] = ()
    claims: tuple[Claim, ...] = ()
    figures: tuple[dict, ...] = ()
    paper_patience: int | None = None  # early-stopping patience the paper profile must compose to (0 = off)
    equivalence_margin: float | None = None
    """Percentage points (fraction metrics; else the metric's units) inside which two rows count as tied by the
    two one-sided tests; None: the default of ``results.claims``."""
    profile_notes: dict[str, str] = field(default_factory=dict)
    """What a profile changes from the paper's stated recipe, printed under a table trained with it."""
    profile_caps: dict[str, ProfileCaps] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.paper}/{self.table}"

    def profile_overrides(self, profile: str) -> tuple[str, ...]:
        if profile not in self.profiles:
            raise ConfigError(f"{self.path}: no profile '{profile}'; choose from: {', '.join(sorted(self.profiles))}")
        return self.profiles[profile]

    def caps(self, profile: str) -> ProfileCaps:
        """What ``profile`` caps beyond its overrides (folds, seeds); nothing for a profile written as a list."""
        return self.profile_caps.get(profile, ProfileCaps())

    @property
    def paper_epochs(self) -> int | None:
        """The paper's epoch count, as its ``paper`` profile sets it: what a capped profile's cells are read against."""
        for override in reversed(self.profiles.get("paper", ())):
            key, _, value = override.partition("=")
            if key.lstrip("+") == "trainer.max_epochs" and value.isdigit():
                return int(value)
        return None


@dataclass(frozen=True)
class ProfileCaps:
    """A profile's limits that cannot be overrides, since a column's own overrides come later and win (a column's
    ``split.k=10``): applied after composing, and the command line's ``split.k=`` / ``--seeds`` win over them."""

    max_folds: int | None = None
    seeds: tuple[int, ...] = ()
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Overrides for one column only, after the column's own (a budget's fewer epochs on a large data set)."""


PROFILE_KEYS = {"overrides", "max_folds", "seeds", "columns"}


def _profile(path: Path, name: str, value: Any) -> tuple[tuple[str, ...], ProfileCaps | None]:
    """A profile is a list of overrides, or a mapping ``{overrides: [...], max_folds: K, seeds: [...]}``."""
    if not isinstance(value, dict):
        return _strings(value), None
    _check_keys(f"{path}: profile '{name}'", value, PROFILE_KEYS)
    max_folds = value.get("max_folds")
    if max_folds is not None and (not isinstance(max_folds, int) or max_folds < 2):
        raise ConfigError(f"{path}: profile '{name}': max_folds must be an integer >= 2, got {max_folds!r}")
    seeds = tuple(int(s) for s in value.get("seeds") or ())
    columns = value.get("columns") or {}
    if not isinstance(columns, dict):
        raise ConfigError(f"{path}: profile '{name}': columns must map a column key to overrides, got {columns!r}")
    per_column = {str(k): _strings(v) for k, v in columns.items()}
    return _strings(value.get("overrides")), ProfileCaps(max_folds, seeds, per_column)


def _check_keys(where: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def load_spec(path: Path) -> TableSpec:
    """Parse and check one table file; every problem names the file (and row or column)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _check_keys(str(path), data, TABLE_KEYS)
    kind = data.get("kind", "runs")
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind must be one of {KINDS}, got {kind!r}")
    columns = tuple(_column(path, c) for c in data.get("columns") or ())
    rows = tuple(_row(path, r, {c.key for c in columns}) for r in data.get("rows") or ())
    stats = tuple(StatTest(**s) for s in data.get("stats") or ())
    for test in stats:
        for key in (test.a, test.b):
            if key not in {r.key for r in rows}:
                raise ConfigError(f"{path}: stats test '{test.name}' names row '{key}', which the table lacks")
    profiles = {str(k): _profile(path, str(k), v) for k, v in (data.get("profiles") or {}).items()}
    profile_notes = {str(k): str(v) for k, v in (data.get("profile_notes") or {}).items()}
    for name in sorted(set(profile_notes) - set(profiles)):
        raise ConfigError(f"{path}: profile_notes names profile '{name}', which the table lacks")
    for name, (_, caps) in profiles.items():
        for key in sorted(set(caps.columns) - {c.key for c in columns} if caps else ()):
            choices = ", ".join(c.key for c in columns)
            raise ConfigError(f"{path}: profile '{name}' names column '{key}', which the table lacks ({choices})")
    return TableSpec(
        paper=str(data.get("paper") or path.parent.name),
        table=str(data.get("table") or path.stem),
        title=str(data.get("title", path.stem)),
        path=path,
        kind=kind,
        source=str(data.get("source", "")),
        metric=str(data.get("metric", "accuracy")),
        paper_scale=float(data.get("paper_scale", 100)),
        seeds=tuple(int(s) for s in data.get("seeds") or (0,)),
        base=_strings(data.get("base")),
        profiles={k: overrides for k, (overrides, _) in profiles.items()},
        profile_caps={k: caps for k, (_, caps) in profiles.items() if caps is not None},
        notes=_strings(data.get("notes")),
        columns=columns,
        rows=rows,
        classes=_strings(data.get("classes")),
        overrides=_strings(data.get("overrides")),
        paper_values=data.get("paper_matrix"),
        stats=stats,
        claims=tuple(_claim(path, c, rows, columns) for c in data.get("claims") or ()),
        figures=tuple(dict(f) for f in data.get("figures") or ()),
        paper_patience=None if data.get("paper_patience") is None else int(data["paper_patience"]),
        profile_notes=profile_notes,
        equivalence_margin=_margin(path, data.get("equivalence_margin")),
    )


def _margin(path: Path, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{path}: equivalence_margin must be a positive number (points), got {value!r}")
    return float(value)


def _claim(path: Path, data: dict, rows: tuple[Row, ...], columns: tuple[Column, ...]) -> Claim:
    """A claim names two rows and the columns it covers, or two columns and the rows; all must exist."""
    where = f"{path}: claim {data.get('better', '?')} > {data.get('than', '?')}"
    _check_keys(where, data, CLAIM_KEYS)
    if not data.get("source"):
        raise ConfigError(f"{where}: say where the paper claims it (source:)")
    row_keys, column_keys = [r.key for r in rows], [c.key for c in columns]
    across = "rows" in data
    pair_from, over_from = (column_keys, row_keys) if across else (row_keys, column_keys)
    over = _strings(data.get("rows" if across else "columns")) or tuple(over_from)
    for key in (data.get("better"), data.get("than")):
        if key not in pair_from:
            raise ConfigError(f"{where}: '{key}' is not a {'column' if across else 'row'}; choose from {pair_from}")
    unknown = [k for k in over if k not in over_from]
    if unknown:
        raise ConfigError(f"{where}: unknown {'rows' if across else 'columns'} {unknown}; choose from {over_from}")
    return Claim(
        better=str(data["better"]),
        than=str(data["than"]),
        source=str(data["source"]),
        columns=() if across else over,
        rows=over if across else (),
        metric=data.get("metric"),
        lower_is_better=bool(data.get("lower_is_better", False)),
    )


def _column(path: Path, data: dict) -> Column:
    _check_keys(f"{path}: column {data.get('key', '?')}", data, COLUMN_KEYS)
    return Column(
        str(data["key"]), str(data.get("label", data["key"])), _strings(data.get("overrides")), data.get("metric")
    )


def _row(path: Path, data: dict, column_keys: set[str]) -> Row:
    where = f"{path}: row {data.get('key', '?')}"
    _check_keys(where, data, ROW_KEYS)
    paper = dict(data.get("paper") or {})
    unknown = sorted(set(paper) - column_keys)
    if unknown:
        raise ConfigError(f"{where}: paper values for unknown column(s) {unknown}; columns: {sorted(column_keys)}")
    return Row(
        key=str(data["key"]),
        label=str(data.get("label", data["key"])),
        overrides=_strings(data.get("overrides")),
        paper=paper,
        cited=bool(data.get("cited", False)),
        metric=data.get("metric"),
        note=data.get("note"),
    )


def all_specs(root: Path | None = None) -> list[TableSpec]:
    root = root or experiments_dir()
    return [load_spec(p) for p in sorted(Path(root).glob("*/*.yaml"))]


def find_specs(target: str, root: Path | None = None, profile: str | None = None) -> list[TableSpec]:
    """``all`` | ``<paper>`` | ``<paper>/<table>`` | a table file's path (a user's own table, anywhere).

    Only the files asked for are loaded: a broken table file fails the commands that name it; under ``all`` it is
    a one-line warning and the other tables go on. An unknown name lists what exists.

    With ``profile``, ``all`` and a paper key keep only the tables that have that profile (or need none: ``layers``
    and ``counts`` tables), and say in one warning line which they left out; a table named on its own is kept, so
    that building it fails on the missing profile, naming the ones it has.
    """
    root = Path(root or experiments_dir())
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        if not Path(target).is_file():
            raise ConfigError(f"no table file at {target}")
        return [load_spec(Path(target))]
    files = sorted(root.glob("*/*.yaml"))
    if target == "all":
        return _with_profile(target, [spec for spec in map(_loaded_or_warned, files) if spec is not None], profile)
    chosen = [p for p in files if target in (p.parent.name, f"{p.parent.name}/{p.stem}")]
    if not chosen:
        names = ", ".join(f"{p.parent.name}/{p.stem}" for p in files)
        raise ConfigError(f"unknown table '{target}'; choose from: all, a paper key, a table file, or one of {names}")
    specs = [load_spec(p) for p in chosen]
    return specs if "/" in target else _with_profile(target, specs, profile)


PROFILE_FREE = ("layers", "counts")
"""Kinds of table that train nothing and read no profile."""


def _with_profile(target: str, specs: list[TableSpec], profile: str | None) -> list[TableSpec]:
    """``specs`` less those without ``profile`` (one warning line names them); none left is an error."""
    if profile is None:
        return specs
    has = [s.kind in PROFILE_FREE or profile in s.profiles for s in specs]
    kept = [s for s, ok in zip(specs, has, strict=True) if ok]
    left_out = [s.name for s, ok in zip(specs, has, strict=True) if not ok]
    if left_out and not any(s.kind not in PROFILE_FREE for s in kept):
        have = sorted({p for s in specs for p in s.profiles})
        raise ConfigError(f"no table of '{target}' has profile '{profile}'; its tables have: {', '.join(have)}")
    if left_out:
        logging.getLogger("ferbench").warning(
            "%d of %d tables of '%s' have no profile '%s', left out: %s",
            len(left_out),
            len(specs),
            target,
            profile,
            ", ".join(left_out),
        )
    return kept


def _loaded_or_warned(path: Path) -> TableSpec | None:
    try:
        return load_spec(path)
    except ConfigError as exc:
        logging.getLogger("ferbench").warning("%s; that table is left out", exc)
        return None
