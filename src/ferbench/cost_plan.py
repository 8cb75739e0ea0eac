"""``ferbench table ... --plan``: what each missing cell will cost in CPU hours, before anything trains.

A gallery on a CPU is filled over several sittings of a few hours: the cells worth training first are those that
decide the most claims per CPU hour. Each missing run's cost is projected from its own folds (the split as it will
be drawn, so the image counts are exact), its epoch cap (the most it can take) and, where converged runs of the
same model and profile exist, their mean epochs; the rate is the training images per second measured in run records
of the same model and input size (validation included, as ``train_seconds`` counts it). Nothing here trains.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from ferbench.data.identity import load_source
from ferbench.data.splits import run_folds
from ferbench.records import record as rec
from ferbench.results.cells import early_stop_fired
from ferbench.results.spec import TableSpec

GALLERY = Path("results/gallery")
"""The committed gallery's records (from a checkout's root): rates measured on the machines its README names."""


@dataclass(frozen=True)
class Rate:
    """Training images per second (validation included) and where it was measured."""

    images_per_s: float
    source: str


@dataclass
class RunCost:
    table: str
    cell: str
    run_id: str
    folds: int
    train_images: int
    """Training-side images per epoch, summed over the run's folds (training part + validation part)."""
    max_epochs: int
    expected_epochs: float
    rate: Rate | None
    claims: int
    """Claim checks of the table this cell takes part in: what training it can decide."""

    @property
    def hours_at_most(self) -> float:
        return self._hours(self.max_epochs)

    @property
    def hours_expected(self) -> float:
        return self._hours(self.expected_epochs)

    def _hours(self, epochs: float) -> float:
        if self.rate is None or self.rate.images_per_s <= 0:
            return math.nan
        return self.train_images * epochs / self.rate.images_per_s / 3600

    @property
    def value_per_hour(self) -> float:
        hours = self.hours_expected
        return self.claims / hours if hours and math.isfinite(hours) else 0.0


def record_rows(results_dirs: Iterable[Path], nested: bool = False) -> pd.DataFrame:
    """Every fold row of every complete run in these results dirs' ``runs/`` (``nested``: their sub-folders' too,
    as the gallery's folders are)."""
    frames = []
    pattern = "**/runs/*/metrics.csv" if nested else "runs/*/metrics.csv"
    for root in results_dirs:
        for metrics in sorted(Path(root).glob(pattern)):
            try:
                frames.append(pd.read_csv(metrics))
            except (OSError, ValueError, pd.errors.ParserError):
                continue  # a damaged record measures nothing; `ferbench table` reports it
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def measured_rate(rows: pd.DataFrame, cfg: DictConfig) -> Rate | None:
    """Images/s of recorded runs of this model, input size and channels: sum(images x epochs) / sum(seconds)."""
    need = {"model", "input_size", "in_chans", "n_train", "n_val", "epochs_run", "train_seconds"}
    if rows.empty or not need <= set(rows.columns):
        return None
    same = rows[
        rows["model"].eq(cfg.model.name)
        & rows["input_size"].eq(int(cfg.model.input_size))
        & rows["in_chans"].eq(int(cfg.model.in_chans))
        & rows["train_seconds"].gt(0)
    ]
    if same.empty:
        return None
    if "own" in same and same["own"].any():
        same = same[same["own"].astype(bool)]  # the results dir's own records: this machine's speed, not another's
    images = ((same["n_train"] + same["n_val"]) * same["epochs_run"]).sum()
    seconds = same["train_seconds"].sum()
    machines = ", ".join(sorted(set(same["fps_device"].astype(str)))) if "fps_device" in same else "?"
    return Rate(float(images / seconds), f"{len(same)} recorded folds ({machines})")


def expected_epochs(rows: pd.DataFrame, cfg: DictConfig) -> float:
    """Mean epochs of recorded folds of this model that stopped early under the same cap, else the cap itself."""
    cap = int(cfg.trainer.max_epochs)
    need = {"model", "max_epochs", "epochs_run", "stopped_early"}
    if rows.empty or not need <= set(rows.columns):
        return float(cap)
    same = rows[rows["model"].eq(cfg.model.name) & rows["max_epochs"].eq(cap) & early_stop_fired(rows)]
    return float(same["epochs_run"].mean()) if len(same) else float(cap)


def claims_per_cell(spec: TableSpec) -> dict[tuple[str, str], int]:
    """How many claim checks each (row, column) cell of the table takes part in."""
    counts: dict[tuple[str, str], int] = {}
    for claim in spec.claims:
        pairs = (
            [((r, claim.better), (r, claim.than)) for r in claim.rows]
            if claim.across_columns
            else [((claim.better, c), (claim.than, c)) for c in claim.columns]
        )
        for a, b in pairs:
            counts[a] = counts.get(a, 0) + 1
            counts[b] = counts.get(b, 0) + 1
    return counts


def training_images(cfg: DictConfig) -> tuple[int, int]:
    """(folds, training-side images summed over the folds) of this run as its split will draw it."""
    from ferbench.factory import task_for

    samples = load_source(cfg).samples
    folds = run_folds(cfg, samples, samples["label"].to_numpy(), task_for(cfg).min_classes)
    fraction = float(cfg.trainer.get("limit_train_fraction", 1.0) or 1.0)
    return len(folds), int(sum(len(f.train) * min(fraction, 1.0) + len(f.val) for f in folds))


def chosen_cells(
    spec: TableSpec, profile: str, extra: Sequence[str], only: Sequence[str] = (), seeds: Sequence[int] = ()
) -> list:
    """The planned cells of a ``runs`` table that ``--only`` names (all without it), composing only those."""
    from ferbench.tables import plan, plan_cell

    if spec.kind != "runs":
        return plan(spec, profile, extra, seeds)
    return [
        plan_cell(spec, row, column, profile, extra, seeds)
        for row in spec.rows
        for column in spec.columns
        if not only or {row.key, column.key, f"{row.key}:{column.key}"} & set(only)
    ]


def plan_costs(spec: TableSpec, cells: Sequence, rows: pd.DataFrame) -> list[RunCost]:
    """One RunCost per missing run of these cells (a run shared by several cells is costed once)."""
    claims = claims_per_cell(spec)
    costs: dict[str, RunCost] = {}
    for cell in cells:
        for cfg, run_id in zip(cell.configs, cell.run_ids, strict=True):
            if run_id in costs or rec.is_complete(rec.run_dir(cfg.results_dir, run_id)):
                continue
            folds, images = training_images(cfg)
            costs[run_id] = RunCost(
                spec.name,
                ":".join(k for k in cell.key if k),
                run_id,
                folds,
                images,
                int(cfg.trainer.max_epochs),
                expected_epochs(rows, cfg),
                measured_rate(rows, cfg),
                claims.get(cell.key, 0),
            )
    return list(costs.values())


def by_value(costs: Sequence[RunCost]) -> list[RunCost]:
    """Most claim checks per expected CPU hour first; unmeasured runs last, cheapest first among equals."""
    return sorted(costs, key=lambda c: (-c.value_per_hour, c.hours_expected if c.rate else math.inf))


def plan_frame(costs: Sequence[RunCost]) -> pd.DataFrame:
    """The plan as a table (what ``--plan`` prints), in training order."""
    return pd.DataFrame(
        [
            {
                "table": c.table,
                "cell": c.cell,
                "run_id": c.run_id,
                "folds": c.folds,
                "images/epoch": c.train_images,
                "epochs (expected / cap)": f"{c.expected_epochs:.0f} / {c.max_epochs}",
                "images/s": round(c.rate.images_per_s, 1) if c.rate else math.nan,
                "CPU h expected": round(c.hours_expected, 2),
                "CPU h at most": round(c.hours_at_most, 2),
                "claims": c.claims,
                "rate from": c.rate.source if c.rate else "no record of this model and size: `ferbench bench`",
            }
            for c in by_value(costs)
        ]
    )


def table_costs(
    specs: Sequence[TableSpec], profile: str, extra: Sequence[str], only: Sequence[str] = (), seeds: Sequence[int] = ()
) -> list[RunCost]:
    """Every missing run of these tables under ``profile``, costed from the records in the results dir and in the
    committed gallery (``results/gallery``: measured on the machines its README names)."""
    from ferbench.config import compose_config

    results_dir = Path(compose_config(list(extra)).results_dir)
    own, gallery = record_rows([results_dir]), record_rows([GALLERY], nested=True)
    rows = pd.concat([own.assign(own=True), gallery.assign(own=False)])
    costs: list[RunCost] = []
    seen: set[str] = set()
    for spec in specs:
        for cost in plan_costs(spec, chosen_cells(spec, profile, extra, only, seeds), rows):
            if cost.run_id not in seen:  # a run two tables share (amdcnn Tables 3 and 8) is costed once
                seen.add(cost.run_id)
                costs.append(cost)
    return costs
