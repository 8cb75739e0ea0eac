"""``ferbench table``: plan a paper table's cells, train the missing ones, rebuild the table.

Stages, each its own function: ``plan`` (compose every cell's config, decide run / cited / no data),
``train_missing`` (``run(cfg)`` for records that do not exist yet), then ``results.cells`` aggregates
the records and ``results.render`` writes Markdown, CSV and LaTeX; ``gradcam_step`` stores the Grad-CAM maps of
the runs a figure shows in their records, and ``results.figures`` draws from records only. Aggregation never trains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ferbench.config import compose_config
from ferbench.data.identity import fingerprint_of
from ferbench.errors import CannotWrite, ConfigError, FerbenchError, RunBusy
from ferbench.paths import config_dir
from ferbench.records import record as rec
from ferbench.records.atomic import write_text
from ferbench.results.spec import Column, Row, TableSpec

log = logging.getLogger("ferbench")

SMOKE_DATA = [
    "data=synthetic",
    "data.options.n_train=140",
    "data.options.n_test=70",
    "trainer.limit_train_fraction=1.0",
]
"""What a smoke cell whose data set is absent trains on: enough faces for two folds of seven classes, few enough
that ``make smoke-tables`` (every table, one seed, at most two folds a cell) takes minutes on two CPU cores."""
SMOKE_MAX_FOLDS = 2
SMOKE_MAX_SEEDS = 1
SMOKE_MAX_INPUT = 64
"""Smoke trains at most 64 px (mnv3simam's 224 would cost 12 times the compute): every layer still runs; the
paper profile keeps each model's own input size."""


@dataclass
class CellPlan:
    """One table cell: the runs behind it (one per seed) or why there are none."""

    row: Row
    column: Column | None
    metric: str
    status: str  # "run" | "cited" | "no data" | "paper only"
    configs: list[DictConfig] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    substituted: str | None = None  # the data set smoke replaced by synthetic
    missing: str | None = None  # where the absent data set was looked for
    failure: str | None = None
    trained_here: list[str] = field(default_factory=list)
    """Its runs this process trained (not reused, not finished by another process sharing the table)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.row.key, self.column.key if self.column else ""


def _data_missing(cfg: DictConfig) -> str | None:
    """The path an absent data set was looked for, or None when it is there (synthetic always is)."""
    root = cfg.data.get("root")
    if cfg.data.name == "synthetic" or root is None:
        return None
    return None if Path(root).is_dir() else str(Path(root).resolve())


def override_key(override: str) -> str:
    """``split.k`` for ``split.k=10``, ``+split.k=10`` or ``~split.k``."""
    return override.lstrip("+~").split("=", 1)[0]


def _without_data(overrides: Sequence[str]) -> list[str]:
    """Every override but those of the ``data`` group and its keys (``data=``, ``data.x=``, ``~data``)."""
    return [o for o in overrides if override_key(o).split(".", 1)[0] != "data"]


def _group_choice(override: str) -> str | None:
    """``split`` for ``split=kfold`` (a group choice); None for ``split.k=10`` or ``seed=1``-style keys."""
    key = override_key(override)
    return key if "=" in override and "." not in key and (config_dir() / key).is_dir() else None


def drop_superseded(table_overrides: Sequence[str], extra: Sequence[str]) -> list[str]:
    """The table's overrides less the keys that a command-line ``group=choice`` no longer has.

    A table may say ``split=holdout split.ratio=0.1``; a user's ``split=kfold split.k=10`` must win without
    Hydra failing on a ``split.ratio`` that k-fold does not have. Keys the new choice still has (the table's
    ``trainer.max_epochs`` under ``trainer=gpu``) are kept: the table's settings still apply.
    """
    replaced = {group for group in map(_group_choice, extra) if group}
    if not replaced:
        return list(table_overrides)
    chosen = compose_config(list(extra))
    absent = object()

    def still_applies(override: str) -> bool:
        key = override_key(override)
        if key in replaced:
            return False  # the table's own choice of that group
        if key.split(".", 1)[0] not in replaced or override.startswith("+"):
            return True
        return OmegaConf.select(chosen, key, default=absent) is not absent

    return [o for o in table_overrides if still_applies(o)]


def identity_overrides(extra: Sequence[str]) -> list[str]:
    """The command-line overrides that change what a cell's experiment is (not where files go or how it looks)."""

    def excluded(override: str) -> bool:
        key = override_key(override)
        return any(key == k or key.startswith(f"{k}.") for k in rec.IDENTITY_EXCLUDED)

    return [o for o in extra if not excluded(o)]


def _cap_folds(cfg: DictConfig, overrides: list[str], extra: Sequence[str], most: int) -> list[str]:
    """At most ``most`` folds (smoke: two, enough to exercise k-fold aggregation, cheap enough for CI; a capped
    profile: its ``max_folds``), unless the command line sets ``split.k`` itself."""
    if any(override_key(o) == "split.k" for o in extra):
        return overrides
    if "k" in cfg.split and cfg.split.k > most:
        return [*overrides, f"split.k={most}"]
    return overrides


def _smoke_input(cfg: DictConfig, overrides: list[str], extra: Sequence[str] = ()) -> list[str]:
    """Smoke trains at most ``SMOKE_MAX_INPUT`` pixels, unless the command line sets ``model.input_size``."""
    if any(override_key(o) == "model.input_size" for o in extra) or cfg.model.input_size <= SMOKE_MAX_INPUT:
        return overrides
    return [*overrides, f"model.input_size={SMOKE_MAX_INPUT}"]


def _smoke_split(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Synthetic faces have no subjects: a subject-grouped split becomes plain k-fold in smoke."""
    if cfg.split.name == "subject_kfold":
        return [*overrides, "split=kfold", f"split.k={cfg.split.k}"]
    return overrides


def plan_cell(
    spec: TableSpec, row: Row, column: Column | None, profile: str, extra: Sequence[str], seeds: Sequence[int] = ()
) -> CellPlan:
    metric = (column.metric if column and column.metric else None) or row.metric or spec.metric
    if row.cited:
        return CellPlan(row, column, metric, "cited")
    if not row.overrides and not (column and column.overrides) and not spec.base and not spec.overrides:
        return CellPlan(row, column, metric, "paper only")
    table_overrides = [
        *spec.base,
        *spec.profile_overrides(profile),
        *spec.overrides,
        *(column.overrides if column else ()),
        *(spec.caps(profile).columns.get(column.key, ()) if column else ()),
        *row.overrides,
    ]
    overrides = [*drop_superseded(table_overrides, extra), *extra]
    cfg = compose_config(overrides)
    plan = CellPlan(row, column, metric, "run")
    missing = _data_missing(cfg)
    if missing and profile != "smoke":
        plan.status, plan.missing = "no data", missing
        return plan
    if missing:
        plan.substituted, plan.missing = rec.data_choice(cfg), missing
        overrides = [*_without_data(overrides), *SMOKE_DATA]
        cfg = compose_config(overrides)
    if profile == "smoke":
        # they read only cfg.split (whose k the smoke split swap keeps) and cfg.model: one compose afterwards suffices
        adjusted = _cap_folds(cfg, _smoke_split(cfg, overrides) if missing else overrides, extra, SMOKE_MAX_FOLDS)
        adjusted = _smoke_input(cfg, adjusted, extra)
        if adjusted != overrides:
            overrides, cfg = adjusted, compose_config(adjusted)
    caps = spec.caps(profile)
    if caps.max_folds and (adjusted := _cap_folds(cfg, overrides, extra, caps.max_folds)) != overrides:
        overrides, cfg = adjusted, compose_config(adjusted)
    seeds = seeds or caps.seeds or (spec.seeds[:SMOKE_MAX_SEEDS] if profile == "smoke" else spec.seeds)
    try:
        fingerprint = fingerprint_of(cfg)  # the data's listing, read once per data config and process
    except FerbenchError as exc:
        plan.failure = str(exc)  # unreadable data: the cell says why; the rest of the table goes on
        return plan
    for seed in seeds:
        seeded = cfg.copy()  # same as composing with seed=<seed>, without composing again
        seeded.seed = seed
        plan.configs.append(seeded)
        plan.run_ids.append(rec.run_id(seeded, fingerprint))
    return plan


def plan(spec: TableSpec, profile: str, extra: Sequence[str] = (), seeds: Sequence[int] = ()) -> list[CellPlan]:
    """Every cell of a ``runs`` table (or the single run of a ``confusion`` table); ``seeds`` overrides the table's."""
    if spec.kind == "runs":
        columns: Sequence[Column | None] = spec.columns
        return [plan_cell(spec, row, column, profile, extra, seeds) for row in spec.rows for column in columns]
    if spec.kind == "confusion":
        return [plan_cell(spec, Row("matrix", spec.title), None, profile, extra, seeds)]
    return []


def pending_runs(cells: Sequence[CellPlan]) -> dict[str, DictConfig]:
    """Distinct runs whose record is missing (cells sharing a run train it once)."""
    todo: dict[str, DictConfig] = {}
    for cell in cells:
        for cfg, run_id in zip(cell.configs, cell.run_ids, strict=True):
            if not rec.is_complete(rec.run_dir(cfg.results_dir, run_id)):
                todo.setdefault(run_id, cfg)
    return todo


def train_missing(
    cells: Sequence[CellPlan], on_progress: Callable[[str, int, int], None] | None = None
) -> dict[str, str]:
    """Train every missing run; a run that fails is reported per run id and the rest go on.

    A run another process is training (its lock held) is left to that process: several ``ferbench table``
    processes can share one table, each taking the runs nobody holds.
    """
    from ferbench.run import run_many, seedless_key

    failures: dict[str, str] = {}
    trained: set[str] = set()
    todo = pending_runs(cells)
    groups: dict[str, list[str]] = {}  # a cell's seeds (and its folds) train together where trainer.pack packs
    for run_id, cfg in todo.items():
        groups.setdefault(seedless_key(cfg), []).append(run_id)
    done = 0
    for run_ids in groups.values():
        if on_progress:
            more = f" (+{len(run_ids) - 1} seeds)" if len(run_ids) > 1 else ""
            on_progress(run_ids[0] + more, done, len(todo))
        for run_id, outcome in zip(run_ids, run_many([todo[r] for r in run_ids]), strict=True):
            if isinstance(outcome, CannotWrite):  # a full or read-only disk fails every run alike: stop here
                raise outcome
            if isinstance(outcome, FerbenchError) and not isinstance(outcome, RunBusy):
                failures[run_id] = str(outcome)
            elif isinstance(outcome, rec.RunRecord) and not outcome.reused:
                trained.add(run_id)
        done += len(run_ids)
    if on_progress:
        on_progress("", len(todo), len(todo))
    for cell in cells:
        cell.trained_here = [r for r in cell.run_ids if r in trained]
        reasons = [failures[r] for r in cell.run_ids if r in failures]
        if reasons:
            cell.failure = reasons[0]
    return failures


def check_only(specs: Sequence[TableSpec], only: Sequence[str]) -> None:
    """``--only`` keys must name a row, a column or a ``row:column`` cell of some table: a typo fails here instead
    of training nothing."""
    rows = sorted({r.key for spec in specs for r in spec.rows})
    columns = sorted({c.key for spec in specs for c in spec.columns})
    cells = {f"{r.key}:{c.key}" for spec in specs for r in spec.rows for c in spec.columns}
    unknown = [key for key in only if key not in rows and key not in columns and key not in cells]
    if unknown:
        raise ConfigError(
            f"--only {','.join(unknown)} names no row or column of {', '.join(s.name for s in specs)}; "
            f"rows: {', '.join(rows) or '-'}; columns: {', '.join(columns) or '-'}"
        )


def gradcam_step(spec: TableSpec, results: Sequence, results_dir: Path, render_only: bool = False) -> list[Path]:
    """For each ``gradcam`` figure: its rows' runs (each row's first with a checkpoint or stored maps) get Grad-CAM
    maps of the same test faces in their records (``ferbench.gradcam``), which the figure then draws. Under
    ``render_only`` nothing is computed; runs whose checkpoints could give the missing maps are said in one line."""
    figures = [f for f in spec.figures if f.get("kind") == "gradcam"]
    if not figures:
        return []
    from ferbench.gradcam import ensure_gradcam, has_checkpoint, stale_gradcam
    from ferbench.records.gradcam_record import has_gradcam
    from ferbench.results.figures import gradcam_rows

    written: list[Path] = []
    for figure in figures:
        _, rows = gradcam_rows(figure, results, results_dir, lambda d: has_checkpoint(d) or has_gradcam(d))
        run_dirs, n_images = [d for _, d in rows], int(figure.get("n_images", 6))
        if run_dirs and render_only and (stale := stale_gradcam(run_dirs, n_images)):
            log.warning(
                "%s: %s have checkpoints but not this figure's Grad-CAM maps; `ferbench table` without --render-only "
                "computes them",
                spec.name,
                ", ".join(d.name for d in stale),
            )
        elif run_dirs and not render_only:
            written += ensure_gradcam(run_dirs, n_images)
    return written


@dataclass
class TableOutcome:
    spec: TableSpec
    cells: list
    paths: dict[str, Path]
    trained: int
    failures: dict[str, str]
    seconds: float
    left_to_others: int = 0
    """Missing runs another process trained (their lock held, or finished while this one planned): not ours."""


def build_table(
    spec: TableSpec,
    profile: str = "smoke",
    extra: Sequence[str] = (),
    render_only: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
    only: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> TableOutcome:
    """Plan, train what is missing (unless ``render_only``), aggregate and render one table."""
    import time

    from ferbench.results import render_kinds as kinds
    from ferbench.results.cells import aggregate_cell
    from ferbench.results.figures import render_figures
    from ferbench.results.render import write_table

    started = time.perf_counter()
    base_cfg = compose_config(list(extra))
    results_dir = Path(base_cfg.results_dir)
    out_dir = results_dir / "tables"
    if spec.kind in ("layers", "counts"):
        paths = kinds.render_static(spec, base_cfg, list(extra), out_dir)
        return TableOutcome(spec, [], paths, 0, {}, time.perf_counter() - started)
    cells = plan(spec, profile, extra, seeds)
    chosen = [c for c in cells if not only or {c.row.key, c.key[1], ":".join(c.key)} & set(only)]
    todo = pending_runs(chosen)
    failures = {} if render_only else train_missing(chosen, on_progress)
    results = [aggregate_cell(cell, spec, results_dir) for cell in cells]
    gradcam_step(spec, results, results_dir, render_only)  # the one analysis that loads models: before rendering
    if spec.kind == "confusion":
        paths = kinds.write_confusion(spec, cells[0], results[0], profile, out_dir, identity_overrides(extra))
    else:
        paths = write_table(spec, results, profile, out_dir, identity_overrides(extra))
    figures = render_figures(spec, results, results_dir)
    if figures:
        links = "\n".join(f"![{f.stem}](../../figures/{spec.paper}/{f.name})" for f in figures)
        write_text(paths["md"], paths["md"].read_text() + "\n" + links + "\n")
        paths.update({f.stem: f for f in figures})
    trained = len({r for cell in chosen for r in cell.trained_here})  # by this process: another's are its own
    left = 0 if render_only else len(todo) - trained - len(failures)  # busy, or finished by another meanwhile
    return TableOutcome(spec, results, paths, trained, failures, time.perf_counter() - started, left)
