"""Terminal output: the end-of-run summary and the data-set listing (rich tables)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from ferbench.records.record import RunRecord
from ferbench.training.metrics import SCALAR_METRICS

console = Console(width=None if sys.stdout.isatty() else 160)


DETECTION_METRICS = ("map50", "map50_95", "fps")
SUMMARY_METRICS = ("accuracy", "f1", *DETECTION_METRICS)
"""What the end-of-run table shows, so that it fits an 80-column terminal; every metric is in ``metrics.csv``."""


def print_run_summary(record: RunRecord) -> None:
    """One row per fold, then mean ± std when there are several; says when nothing was trained."""
    m = record.metrics
    first = m.iloc[0]
    console.print(
        f"{record.run_id}  [{first['model']} + {first['attn']} on {first['data']}, split {first['split']}, "
        f"seed {first['seed']}, protocol {first['protocol']}]",
        highlight=False,
        markup=False,  # the brackets are text: as rich markup they vanished from the title
    )
    table = Table()
    shown = [k for k in SUMMARY_METRICS if k in m]  # a detector's record has no accuracy
    for column in ("fold", "epochs", "n_test", *shown, "train s"):
        table.add_column(column, justify="right")
    for _, row in m.iterrows():
        table.add_row(
            str(row["fold"]),
            f"{row['epochs_run']}/{row['max_epochs']}",
            str(row["n_test"]),
            *(f"{row[k]:.4f}" for k in shown),
            f"{row['train_seconds']:.1f}",
        )
    if len(m) > 1:
        stats = [f"{m[k].mean():.3f}±{m[k].std(ddof=1):.3f}" for k in shown]
        table.add_row("mean±sd", "", "", *stats, f"{m['train_seconds'].sum():.1f}")
    console.print(table)
    others = [k for k in (*SCALAR_METRICS, *DETECTION_METRICS) if k in m and k not in shown]
    if others:
        console.print(f"also in metrics.csv: {', '.join(others)}")
    skipped = {k: v for k, v in json.loads(first.get("skipped", "{}") or "{}").items() if v}
    if skipped:
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items())
        console.print(f"ferbench: while reading the data (left out, or kept whole): {counts}", markup=False)
    state = "reused existing record (nothing trained)" if record.reused else "record written"
    console.print(f"{state}: {record.run_dir}")


def print_datasets(data_root: str | None, overrides: list[str] | None = None) -> None:
    """Where each data set is looked for and whether it is there; then images per class and split."""
    from ferbench.data.catalog import dataset_status

    statuses = dataset_status(data_root, overrides or [])
    table = Table(title="data sets (ferbench datasets)", title_justify="left")
    for column in ("config", "present", "images", "train", "val", "test", "no split", "root"):
        table.add_column(
            column, justify="right" if column in ("images", "train", "val", "test", "no split") else "left"
        )
    for s in statuses:
        totals = s.counts.sum(axis=0) if s.counts is not None else {}
        table.add_row(
            s.config,
            "yes" if s.present else "[red]no[/red]",
            str(s.n_images or ""),
            *(str(int(totals[k])) if k in totals else "" for k in ("train", "val", "test", "all")),
            str(s.root or "—"),
        )
    console.print(table)
    for s in statuses:
        if not s.present:
            console.print(f"[red]{s.config}[/red]: {s.error}")
        elif s.skipped:
            console.print(f"{s.config}: left out while reading: " + ", ".join(f"{k}={v}" for k, v in s.skipped.items()))
    for s in statuses:
        if s.counts is not None and s.config != "synthetic":
            per_class = Table(title=s.config, title_justify="left")
            per_class.add_column("class")
            for split in s.counts.columns:
                per_class.add_column(str(split), justify="right")
            for name, row in s.counts.iterrows():
                per_class.add_row(str(name), *(str(int(v)) for v in row))
            console.print(per_class)


@contextmanager
def table_progress(name: str) -> Iterator[Callable[[str, int, int], None]]:
    """A bar over the table's missing runs (each run's own bar is off), with elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=None)

        def update(run_id: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=max(total, 1), description=run_id)

        yield update


def print_table_outcome(outcome) -> None:
    spec = outcome.spec
    console.print(
        f"{spec.name}: trained {outcome.trained} run(s), {len(outcome.failures)} failed, "
        + (f"{outcome.left_to_others} left to another process, " if outcome.left_to_others else "")
        + f"{outcome.seconds:.1f} s -> {outcome.paths.get('md')}"
    )
    for run_id, reason in outcome.failures.items():
        console.print(f"  failed {run_id}: {reason}")
    print_table_grid(outcome.paths.get("csv"), spec.title)
    print_claims(outcome.paths.get("claims"))


def print_cost_plan(specs, profile: str, extra: list[str], only: list[str], seeds: list[int]) -> None:
    """``ferbench table ... --plan``: the missing runs in training order, with their projected CPU hours."""
    import math

    from ferbench.cost_plan import plan_frame, table_costs

    frame = plan_frame(table_costs(specs, profile, extra, only, seeds))
    sources = sorted(set(frame["rate from"])) if not frame.empty else []
    frame = frame.drop(columns=["run_id", "rate from"], errors="ignore")
    if frame.empty:
        console.print(f"nothing to train: every run of {', '.join(s.name for s in specs)} (profile={profile}) exists")
        return
    table = Table(title=f"missing runs, profile={profile}, most claims per CPU hour first", title_justify="left")
    for column in frame.columns:
        table.add_column(column, overflow="fold")
    for _, row in frame.iterrows():
        table.add_row(*("?" if isinstance(v, float) and math.isnan(v) else str(v) for v in row))
    console.print(table)
    expected, most = frame["CPU h expected"].sum(), frame["CPU h at most"].sum()
    unmeasured = int(frame["images/s"].isna().sum())
    console.print(
        f"{len(frame)} runs: {expected:.1f} CPU hours expected, {most:.1f} at most (every epoch cap reached)"
        + (f"; {unmeasured} without a measured rate (not in the sums)" if unmeasured else "")
    )
    console.print("images/s from: " + "; ".join(sources))


def print_table_grid(path, title: str) -> None:
    """The rendered table on the terminal, rows x columns of cell texts (ours (paper, delta)), as in the Markdown."""
    import pandas as pd

    if path is None or not path.is_file() or not path.stat().st_size:
        return
    cells = pd.read_csv(path, keep_default_na=False)
    if not {"row_label", "column_label", "text"} <= set(cells.columns):
        return
    grid = cells.pivot_table(index="row_label", columns="column_label", values="text", aggfunc="first", sort=False)
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for column in grid.columns:
        table.add_column(str(column), overflow="fold")
    for label, row in grid.iterrows():
        table.add_row(str(label), *(str(v) for v in row))
    console.print(table)


def print_claims(path) -> None:
    """The table's claims and verdicts, as rendered into ``<table>.claims.csv`` (nothing when it has none)."""
    import pandas as pd

    if path is None or not path.is_file() or not path.stat().st_size:
        return
    claims = pd.read_csv(path, keep_default_na=False)
    if claims.empty:
        return
    tally = ", ".join(f"{n} {v}" for v, n in claims["verdict"].value_counts().items())
    judged = claims[claims["verdict"] != "not run"]
    left = len(claims) - len(judged)
    console.print(
        f"claims ({tally})"
        + (f"; the {left} not run are in the table's Markdown" if left and len(judged) else "")
        + ":",
        markup=False,
    )
    for text in (judged if len(judged) else claims)["text"]:
        console.print(f"  - {text.replace('**', '').replace('*', '')}", markup=False, highlight=False)


def print_profile(cfg, report: dict[str, float], layers, device: str) -> None:
    title = f"{cfg.model.name} + {cfg.attn.name}, {cfg.model.in_chans}x{cfg.model.input_size}x{cfg.model.input_size}"
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{report['params_m'] * 1e6:,.0f}")
    table.add_row("multiply-adds (M)", f"{report['macs_m']:.2f}")
    table.add_row("size (KB, float32)", f"{report['size_kb']:,.0f}")
    table.add_row("forward/backward activations (MB)", f"{report['forward_backward_mb']:.2f}")
    table.add_row(f"frames/s at batch 1 ({device})", f"{report['fps_batch1']:.1f}")
    console.print(table)
    if layers is not None:
        per_layer = Table(title="per layer (paper 003, Table 1 form)", title_justify="left")
        for column in layers.columns:
            per_layer.add_column(str(column))
        for _, row in layers.iterrows():
            per_layer.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
        console.print(per_layer)


def print_leakage(figures: dict, grid, out) -> None:
    """Overlap per fold, then the sums (the keys of ``--out``); None reads 'unknown' (no subjects recorded)."""
    from ferbench.data.leakage import KEYS
    from ferbench.results.leakage import describe

    title = (
        f"leakage: {figures['data']}, split {figures['split']}, seed {figures['seed']}, protocol {figures['protocol']}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("fold", justify="right")
    for key in KEYS:
        table.add_column(key.replace("_", " "), justify="right")
    rows = [*figures["folds"], {"fold": "sum", **{k: figures[k] for k in KEYS}}]
    for row in rows:
        table.add_row(str(row["fold"]), *("unknown" if row[k] is None else str(row[k]) for k in KEYS))
    console.print(table)
    console.print(describe(figures) + f" (pHash within {figures['threshold']} bits).")
    if grid:
        console.print(f"examples: {grid}")
    if out:
        console.print(f"written: {out}")
