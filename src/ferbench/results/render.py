"""Render aggregated cells: Markdown (for reports), CSV (one row per cell, machine-readable), LaTeX.

Every cell reads ``ours (paper, Δ)``; cited rows read ``cited: <paper>``; absent data reads ``no data``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ferbench.records.atomic import write_csv, write_text
from ferbench.results.cells import CellResult, is_fraction, t_test
from ferbench.results.claims import CLAIM_COLUMNS, claim_lines, claims_frame_rows, judge_claims
from ferbench.results.leakage import describe
from ferbench.results.spec import TableSpec

SYNTHETIC_MARK = "†"
SMOKE_NOTE = (
    "Smoke checks the pipeline and reproduces nothing: one seed, at most two folds and 64 px per cell, a few epochs "
    "(`ferbench.tables.SMOKE_*`; `--seeds`, `split.k=` and `model.input_size=` on the command line win)."
)
IDLE_STATES = ("no data", "not run", "failed", "running", "incomplete", "corrupt")
"""Statuses of a cell with no value of ours: the cell names the state (and the paper's figure)."""


def fmt(value: float | None, metric: str, scale: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if is_fraction(metric):
        return f"{value:.2f}" if scale >= 100 else f"{value:.4f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def cell_text(cell: CellResult, scale: float) -> str:
    paper = fmt(cell.paper, cell.metric, scale)
    if cell.status == "cited":
        return f"cited: {paper}"
    if cell.status == "paper only":
        return f"paper: {paper}"
    if cell.status in IDLE_STATES:
        return f"{cell.status} ({paper})" if cell.paper is not None else cell.status
    ours = fmt(cell.mean, cell.metric, scale)
    if cell.n > 1:
        ours += f" ± {fmt(cell.sd, cell.metric, scale)}"
    mark = SYNTHETIC_MARK if cell.substituted else ""
    if cell.paper is None:
        return f"{ours}{mark}"
    delta = cell.delta
    sign = "+" if delta >= 0 else "−"
    return f"{ours}{mark} ({paper}, Δ {sign}{fmt(abs(delta), cell.metric, scale)})"


def grid(spec: TableSpec, cells: Sequence[CellResult]) -> pd.DataFrame:
    """Rows x columns of cell texts, in the paper's order."""
    by_key = {(c.row, c.column): c for c in cells}
    ran = {c.column: c.column_label for c in cells if c.n}
    columns = [ran.get(c.key, c.label) for c in spec.columns] or [""]
    data = []
    for row in spec.rows:
        keys = [c.key for c in spec.columns] or [""]
        data.append([cell_text(by_key[(row.key, k)], spec.paper_scale) for k in keys])
    return pd.DataFrame(data, index=[r.label for r in spec.rows], columns=columns)


def deviation_note(profile: str, deviations: Sequence[str]) -> str:
    """Says that a table was rebuilt with command-line overrides on top of its profile."""
    return (
        f"Not the `{profile}` profile as written: every cell also ran with `{' '.join(deviations)}` "
        "(command-line overrides, part of each run's id)."
    )


def capped_profile_notes(spec: TableSpec, cells: Sequence[CellResult], profile: str) -> list[str]:
    """A capped profile (``budget``) keeps the paper's recipe and cuts its length: say by how much, and where the
    validation curve was still falling at the cap."""
    ran = [c for c in cells if c.status in ("ours", "failed") and c.n]
    notes = []
    caps = sorted({c.max_epochs for c in ran if c.max_epochs})
    if spec.paper_epochs and caps and caps[0] < spec.paper_epochs:
        notes.append(
            f"`{profile}` keeps the paper's recipe with fewer epochs: at most {', '.join(map(str, caps))} "
            f"of the paper's {spec.paper_epochs} per run (a cell's epochs run are below)."
        )
    converged = [c for c in ran if c.converged]
    if converged:
        notes.append(
            "converged (every fold's early stopping fired before the cap): "
            + ", ".join(f"{c.row_label} / {c.column_label}" for c in converged)
            + "; claims on other cells are *provisional*."
        )
    rising = [c for c in ran if c.improving_at_cap]
    for cell in rising:
        notes.append(
            f"still improving at the cap: {cell.row_label} / {cell.column_label}: {cell.improving_at_cap} of "
            f"{cell.n} folds had their best validation loss in the last two epochs allowed."
        )
    return notes


def table_notes(
    spec: TableSpec, cells: Sequence[CellResult], profile: str, deviations: Sequence[str] = ()
) -> list[str]:
    notes = [f"Profile `{profile}`. Cells read *ours (paper, Δ)*; Δ = ours − paper."]
    if profile in spec.profile_notes:
        notes.append(f"`{profile}`: {spec.profile_notes[profile]}")
    if profile == "smoke":
        notes.append(SMOKE_NOTE)
    if deviations:
        notes.append(deviation_note(profile, deviations))
    if profile not in ("paper", "smoke"):
        notes.extend(capped_profile_notes(spec, cells, profile))
    ours = [c for c in cells if c.status in ("ours", "failed") and c.n]
    for protocol in sorted({c.protocol for c in ours}):
        group = [c for c in ours if c.protocol == protocol]
        seeds = sorted({s for c in group for s in c.seeds})
        epochs = sorted({c.epochs_run for c in group})
        maxes = sorted({c.max_epochs for c in group})
        n = sorted({c.n for c in group})
        notes.append(
            f"{protocol}; seeds {seeds}; epochs actually run {', '.join(epochs)} of max {maxes}; "
            f"values per cell (seeds × folds): {n}; ± is the sample sd."
        )
    substituted = sorted({(c.substituted, c.note) for c in cells if c.substituted and len(c.values)})  # trained ones
    for name, path in substituted:
        notes.append(
            f"{SYNTHETIC_MARK} `{name}` is absent (looked in {path}): smoke trained on `synthetic` in its place; "
            "those numbers say nothing about the paper's data."
        )
    for path in sorted({c.note for c in cells if c.status == "no data"}):
        notes.append(f"no data: looked for the data set in {path}.")
    for cell in cells:
        if cell.failure:  # failed in this process (a failed fit also wrote the failed.json read below)
            notes.append(f"failed: {cell.row_label} / {cell.column_label}: {cell.failure}")
        for problem in cell.problems:
            if not (cell.failure and problem.kind == "failed"):
                notes.append(
                    f"{problem.kind}: {cell.row_label} / {cell.column_label}: run `{problem.run_id}`: {problem.detail}"
                )
    notes.extend(leakage_notes(cells))
    if any(c.status == "cited" for c in cells):
        notes.append("Rows marked *cited* are the paper's citations of other work, not reproduced here.")
    for test in spec.stats:
        for column in spec.columns:
            statistic, p_value, n_a, n_b = t_test(cells, test, column.key)
            if n_a == n_b == 0:
                continue  # nothing ran in that column ("no data" or not run): said elsewhere
            if math.isnan(p_value):
                notes.append(
                    f"paper's test (independent t-test) {test.name} ({column.label}): "
                    f"needs ≥ 2 runs per row (have {n_a}, {n_b})."
                )
            else:
                notes.append(
                    f"paper's test (independent t-test, as the paper) {test.name} "
                    f"({column.label}, {test.b} vs {test.a}, {test.metric}): "
                    f"t = {statistic:.3f}, p = {p_value:.3g} (n = {n_a}, {n_b})."
                )
    notes.extend(spec.notes)
    return notes


def leakage_notes(cells: Sequence[CellResult]) -> list[str]:
    """Each column's train/test overlap, from its runs' ``leakage.json`` (one line per distinct figure set)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for cell in cells:
        if cell.leakage is not None:
            key = (cell.column_label, describe(cell.leakage))
            seen.setdefault(key, []).append(cell.row_label)
    per_column = Counter(column for column, _ in seen)
    columns_of: dict[tuple[str, str], list[str]] = {}  # metric columns over the same runs share one line
    for (column, text), rows in seen.items():
        which = f" ({', '.join(rows)})" if per_column[column] > 1 else ""  # rows only where they differ
        columns_of.setdefault((which, text), []).append(column)
    notes = []
    for (which, text), columns in columns_of.items():
        notes.append(f"leakage, {', '.join(columns)}{which}: {text}, summed over folds and runs.")
    return notes


def claims_markdown(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    header = (
        "\n**Claims** (verdict: *holds* / *reversed* = significant in / against the claimed direction after Holm "
        "over this table's claims, p < 0.05; *equivalent* = the two one-sided tests put the difference inside the "
        "margin, Holm p < 0.05; *provisional* = a cell's runs were cut by their epoch cap while still improving, so "
        "no verdict is drawn; paired over matched seed × fold runs):\n\n"
    )
    return header + "\n".join(f"- {line}" for line in lines) + "\n"


def to_markdown(spec: TableSpec, table: pd.DataFrame, notes: Sequence[str]) -> str:
    header = "| | " + " | ".join(map(str, table.columns)) + " |"
    rule = "|---" * (len(table.columns) + 1) + "|"
    lines = [
        f"| {idx} | " + " | ".join(row) + " |" for idx, row in zip(table.index, table.values.tolist(), strict=True)
    ]
    source = f"\n\nSource: {spec.source}" if spec.source else ""
    body = "\n".join([header, rule, *lines])
    notes_md = "\n".join(f"- {n}" for n in notes)
    return f"### {spec.paper} — {spec.title}{source}\n\n{body}\n\n{notes_md}\n"


def cells_frame(cells: Sequence[CellResult], scale: float) -> pd.DataFrame:
    rows = []
    for c in cells:
        row = {k: v for k, v in asdict(c).items() if k != "values"}
        row.update(ours_mean=c.mean, ours_sd=c.sd, n=c.n, delta=c.delta, text=cell_text(c, scale))
        row["run_ids"] = " ".join(c.run_ids)
        row["seeds"] = " ".join(map(str, c.seeds))
        row["problems"] = "; ".join(f"{p.kind} {p.run_id}: {p.detail}" for p in c.problems)
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(
    spec: TableSpec, cells: Sequence[CellResult], profile: str, out_dir: Path, deviations: Sequence[str] = ()
) -> dict[str, Path]:
    """``<out_dir>/<paper>/<table>.{md,csv,tex}``; returns the paths. ``deviations``: the user's overrides."""
    table = grid(spec, cells)
    notes = table_notes(spec, cells, profile, deviations)
    judged = judge_claims(spec, cells)
    base = Path(out_dir) / spec.paper / spec.table
    md = write_text(
        base.with_suffix(".md"), to_markdown(spec, table, notes) + claims_markdown(claim_lines(spec, judged))
    )
    csv = write_csv(base.with_suffix(".csv"), cells_frame(cells, spec.paper_scale))
    claims = write_csv(
        base.with_suffix(".claims.csv"), pd.DataFrame(claims_frame_rows(spec, judged), columns=CLAIM_COLUMNS)
    )
    latex = table.to_latex(escape=True, caption=f"{spec.title} (ours (paper, $\\Delta$))")
    tex = write_text(base.with_suffix(".tex"), latex)
    return {"md": md, "csv": csv, "tex": tex, "claims": claims}
