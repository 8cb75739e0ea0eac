"""``ferbench gallery``: render every table of every gallery folder from its records, then write the gallery's
``README.md`` from them: per folder and table the machine (the manifest's words), code commits, dates, batch, lr,
epochs run against the cap, folds, seeds, CPU hours, each cell against the paper, the folds that stopped early,
the judged claims as a table and a forest plot. No number on the page is typed by hand.

``build`` is ``ferbench.tables.build_table``, passed in by the command line (analysis does not import the table
builder: that one imports analysis).
"""

from __future__ import annotations

import argparse
import math
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ferbench.records import record as rec
from ferbench.records.atomic import write_text
from ferbench.results import gallery_facts as gf
from ferbench.results.cells import CellResult
from ferbench.results.claims import ClaimResult, judge_claims, points_factor
from ferbench.results.forest import ForestLine, forest_figure
from ferbench.results.gallery_manifest import DEFAULT_MANIFEST, Entry, Manifest, load_manifest
from ferbench.results.render import SYNTHETIC_MARK, fmt
from ferbench.results.spec import TableSpec, find_specs

NOT_JUDGED = "not run"
"""The one verdict the page leaves out of its claims tables: every other verdict is listed as it reads."""


@dataclass
class RenderedTable:
    spec: TableSpec
    cells: list[CellResult]
    results_dir: Path


@dataclass
class RenderedEntry:
    entry: Entry
    results_dir: Path
    tables: list[RenderedTable] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    """The overrides its tables were rendered with (what its reports are written with)."""


def render_entry(manifest: Manifest, entry: Entry, overrides: Sequence[str], build: Callable) -> RenderedEntry:
    """Every table of one folder rendered from its records (nothing trains); a folder without runs renders none."""
    results_dir = manifest.results_dir(entry)
    done = RenderedEntry(entry, results_dir)
    if not rec.runs_dir(results_dir).is_dir():
        return done
    done.extra = ["trainer.progress_bar=false", *manifest.data, *entry.overrides, f"results_dir={results_dir}"]
    done.extra += overrides
    for name in entry.tables:
        (spec,) = find_specs(name)
        outcome = build(spec, entry.profile, done.extra, render_only=True, only=entry.only.get(name, ()))
        done.tables.append(RenderedTable(spec, list(outcome.cells), results_dir))
    return done


def _signed(value: float, metric: str, scale: float) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return ("+" if value >= 0 else "−") + fmt(abs(value), metric, scale)


def _effect(value: float, factor: float | None) -> str:
    if not math.isfinite(value):
        return "—"
    number = f"{abs(value * factor):.2f} pt" if factor else f"{abs(value):.4g}"
    return ("+" if value >= 0 else "−") + number


def _p(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "—"


def _link(entry: Entry, *parts: str) -> str:
    return posixpath.normpath(posixpath.join(entry.dir, *parts))


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(*names: str) -> list[str]:
    return [_row(*names), "|" + "---|" * len(names)]


def column_facts(table: RenderedTable) -> dict[str, gf.ColumnFacts]:
    """Each column that ran, keyed by column key, in the table's order."""
    spec = table.spec
    columns = [(c.key, c.label) for c in spec.columns] or [("", "")]
    facts = {key: gf.column_facts(key, label, table.cells, table.results_dir) for key, label in columns}
    return {key: f for key, f in facts.items() if f is not None}


def settings_lines(facts: dict[str, gf.ColumnFacts]) -> list[str]:
    lines = _header(
        "column (as run)",
        "runs",
        "seeds",
        "folds per run",
        "batch",
        "lr",
        "epochs run / cap",
        "folds: stopped early / at cap (best in last 2)",
        "CPU hours",
        "code",
        "trained",
    )
    for f in facts.values():
        folds = f.folds
        lines.append(
            _row(
                f.label,
                folds.runs,
                gf.numbers(f.seeds),
                gf.numbers(f.n_folds),
                gf.numbers(f.batch_sizes),
                gf.numbers(f.lrs),
                f"{folds.epochs} / {gf.numbers(folds.caps)}",
                f"{folds.stopped_early} / {folds.at_cap} ({folds.best_in_last_two}) of {folds.folds}",
                f"{folds.cpu_hours:.2f}",
                ", ".join(f"`{c}`" for c in f.commits) or "—",
                gf.dates(f.first, f.last),
            )
        )
    return lines


def cell_lines(table: RenderedTable, facts: dict[str, gf.ColumnFacts]) -> list[str]:
    """One line per cell that ran: ours (mean ± sd over its values) against the paper, and its folds."""
    spec, scale = table.spec, table.spec.paper_scale
    by_key = {(c.row, c.column): c for c in table.cells}
    lines = _header(
        "row",
        "column (as run)",
        "ours",
        "paper",
        "Δ",
        "values",
        "epochs run",
        "stopped early / at cap (best in last 2)",
    )
    for row in spec.rows:
        for key, f in facts.items():
            cell = by_key.get((row.key, key))
            if cell is None or not gf.ran(cell):
                continue
            ours = fmt(cell.mean, cell.metric, scale) + (f" ± {fmt(cell.sd, cell.metric, scale)}" if cell.n > 1 else "")
            folds = gf.cell_folds(cell, table.results_dir)
            lines.append(
                _row(
                    cell.row_label,
                    f.label,
                    ours + (SYNTHETIC_MARK if cell.substituted else ""),
                    fmt(cell.paper, cell.metric, scale),
                    _signed(cell.delta, cell.metric, scale),
                    cell.n,
                    folds.epochs if folds else "—",
                    f"{folds.stopped_early} / {folds.at_cap} ({folds.best_in_last_two})" if folds else "—",
                )
            )
    return lines


def judged(table: RenderedTable) -> list[ClaimResult]:
    return [r for r in judge_claims(table.spec, table.cells) if r.verdict != NOT_JUDGED]


def _where(result: ClaimResult, facts: dict[str, gf.ColumnFacts]) -> str:
    """A row claim's column as it ran; a column claim's row as the table names it."""
    return (
        facts[result.where].label if not result.claim.across_columns and result.where in facts else result.where_label
    )


def claim_lines(table: RenderedTable, results: Sequence[ClaimResult], facts: dict[str, gf.ColumnFacts]) -> list[str]:
    lines = _header("claim", "where", "verdict", "effect", "95% CI", "Holm p", "n")
    for r in results:
        cell = r.better or r.than
        factor = points_factor(cell.metric, table.spec.paper_scale) if cell is not None else None
        t = r.test
        ci = f"{_effect(t.ci_low, factor)} to {_effect(t.ci_high, factor)}" if t else "—"
        lines.append(
            _row(
                r.claim.label(),
                _where(r, facts),
                f"*{r.verdict}*",
                _effect(t.mean_diff, factor) if t else "—",
                ci,
                _p(r.adjusted_p),
                t.n if t else "—",
            )
        )
    return lines


def forest_path(table: RenderedTable) -> Path:
    return table.results_dir / "figures" / table.spec.paper / f"{table.spec.table}-claims.png"


def draw_forest(table: RenderedTable, results: Sequence[ClaimResult], facts: dict[str, gf.ColumnFacts]) -> Path | None:
    """The judged claims that have a test, as a forest plot beside the table's figures; None when there are none."""
    lines = []
    fraction = True
    for r in results:
        if r.test is None:
            continue
        cell = r.better or r.than
        factor = points_factor(cell.metric, table.spec.paper_scale) if cell is not None else None
        fraction = fraction and factor is not None
        k = factor or 1.0
        t = r.test
        label = f"{r.claim.label()} ({_where(r, facts)})"
        lines.append(ForestLine(label, t.mean_diff * k, t.ci_low * k, t.ci_high * k, r.verdict))
    if not lines:
        return None
    title = f"{table.spec.paper} — {table.spec.title}: claims"
    return forest_figure(lines, forest_path(table), title, "points" if fraction else "metric units")


def table_section(entry: Entry, table: RenderedTable) -> list[str]:
    """One table's part of the page (and its forest plot, drawn)."""
    spec = table.spec
    facts = column_facts(table)
    base = f"tables/{spec.paper}/{spec.table}"
    links = [f"[table]({_link(entry, base + '.md')})"]
    if spec.claims:
        links.append(f"[claims]({_link(entry, base + '.claims.csv')})")
    for figure in sorted((table.results_dir / "figures" / spec.paper).glob(f"{spec.table}_*.png")):
        links.append(
            f"[{figure.stem.removeprefix(spec.table + '_')}]({_link(entry, 'figures', spec.paper, figure.name)})"
        )
    lines = [f"### {spec.paper} — {spec.title}", "", " · ".join(links), ""]
    if not facts:
        return [*lines, "_No cell of this table has records here._", ""]
    ran_cells = [c for c in table.cells if gf.ran(c)]
    lines += [*settings_lines(facts), "", *cell_lines(table, facts), ""]
    others = len([c for c in table.cells if c.status not in ("cited", "paper only")]) - len(ran_cells)
    if others:
        lines += [f"{len(ran_cells)} cells ran; the table's other {others} say their state (not run, no data).", ""]
    results = judged(table)
    if not results:
        return [*lines, "No claim of this table has both its cells run here.", ""]
    all_claims = sum(1 for _ in judge_claims(spec, table.cells))
    lines += [
        f"Claims with both cells run ({len(results)} of {all_claims} claim × column checks; effect = better − than, "
        "Holm over the table's claims):",
        "",
        *claim_lines(table, results, facts),
        "",
    ]
    figure = draw_forest(table, results, facts)
    if figure is not None:
        rel = _link(entry, "figures", spec.paper, figure.name)
        lines += [f"![{spec.paper} {spec.table} claims: effect and 95% CI per claim and column]({rel})", ""]
    return lines


def distinct_runs(rendered: RenderedEntry) -> list[str]:
    """Run ids behind the folder's cells that ran, each once (tables may share runs)."""
    ids = [r for t in rendered.tables for c in t.cells if gf.ran(c) for r in c.run_ids]
    return list(dict.fromkeys(ids))


def entry_folds(rendered: RenderedEntry) -> gf.Folds | None:
    metrics = gf.read_metrics(rendered.results_dir, distinct_runs(rendered))
    return None if metrics.empty else gf.fold_counts(metrics)


def train_commands(manifest: Manifest, entry: Entry) -> list[str]:
    where = posixpath.normpath(posixpath.join(manifest.home, entry.dir))
    lines = []
    for name in entry.tables:
        only = entry.only.get(name, ())
        words = ["ferbench table", name, f"profile={entry.profile}", *(["--only " + ",".join(only)] if only else [])]
        lines.append(" ".join([*words, *entry.overrides, *manifest.data, f"results_dir={manifest.scratch}"]))
    lines += [f"python -m ferbench.results.gallery {manifest.scratch} {where}", "ferbench gallery"]
    return lines


def entry_section(manifest: Manifest, rendered: RenderedEntry) -> list[str]:
    entry = rendered.entry
    where = posixpath.normpath(posixpath.join(manifest.home, entry.dir))
    overrides = " ".join(f"`{o}`" for o in entry.overrides) or "none"
    lines = [
        f"## {entry.title}",
        "",
        f"Folder `{where}`; profile `{entry.profile}`; overrides beyond the profile: {overrides}.",
        "",
        f"Machine: {entry.machine}",
        "",
    ]
    folds = entry_folds(rendered)
    if folds is not None:
        lines += [
            f"{folds.runs} runs, {folds.folds} folds: {folds.stopped_early} stopped early (converged), "
            f"{folds.at_cap} ran to their epoch cap ({folds.best_in_last_two} with their best validation loss in the "
            f"last two epochs); **{folds.cpu_hours:.2f} CPU hours** of training.",
            "",
        ]
    else:
        lines += ["_No records in this folder yet._", ""]
    lines += [
        "Train missing cells, copy their records here, rebuild this page:",
        "",
        "```bash",
        *train_commands(manifest, entry),
        "```",
        "",
    ]
    for table in rendered.tables:
        lines += table_section(entry, table)
    return lines


def overview_lines(manifest: Manifest, entries: Sequence[RenderedEntry]) -> list[str]:
    lines = _header("folder", "profile", "tables", "runs", "folds: stopped early / at cap", "CPU hours")
    total = 0.0
    for rendered in entries:
        folds = entry_folds(rendered)
        where = posixpath.normpath(posixpath.join(manifest.home, rendered.entry.dir))
        if folds is None:
            lines.append(_row(f"`{where}`", rendered.entry.profile, len(rendered.entry.tables), 0, "—", "—"))
            continue
        total += folds.cpu_hours
        lines.append(
            _row(
                f"`{where}`",
                rendered.entry.profile,
                len(rendered.entry.tables),
                folds.runs,
                f"{folds.stopped_early} / {folds.at_cap} of {folds.folds}",
                f"{folds.cpu_hours:.2f}",
            )
        )
    return [*lines, _row("**all**", "", "", "", "", f"**{total:.2f}**")]


def across_lines(manifest: Manifest, entries: Sequence[RenderedEntry]) -> list[str]:
    """Cells that ran in more than one folder (another profile, precision or machine), side by side."""
    seen: dict[tuple[str, str, str], dict[str, str]] = {}
    for rendered in entries:
        for table in rendered.tables:
            facts, scale = column_facts(table), table.spec.paper_scale
            for cell in (c for c in table.cells if gf.ran(c) and c.column in facts):
                ours = fmt(cell.mean, cell.metric, scale)
                ours += f" ± {fmt(cell.sd, cell.metric, scale)}" if cell.n > 1 else ""
                key = (table.spec.name, cell.row_label, facts[cell.column].label)
                seen.setdefault(key, {})[rendered.entry.dir] = f"{ours} ({cell.n})"
    shared = {key: by_dir for key, by_dir in seen.items() if len(by_dir) > 1}
    if not shared:
        return []
    dirs = [e.entry.dir for e in entries if any(e.entry.dir in by_dir for by_dir in shared.values())]
    lines = [
        "## The same cell in several folders",
        "",
        "Ours (values) where a cell ran in more than one folder: another profile, precision or machine.",
        "",
        *_header(
            "table",
            "row",
            "column (as run)",
            *(f"`{posixpath.normpath(posixpath.join(manifest.home, d))}`" for d in dirs),
        ),
    ]
    for (name, row, column), by_dir in shared.items():
        lines.append(_row(name, row, column, *(by_dir.get(d, "—") for d in dirs)))
    return [*lines, ""]


HOW_TO_READ = (
    "How to read it: *ours* is the mean ± sample sd over a cell's values (seeds × folds), *Δ* = ours − paper. A fold "
    "*stopped early* when its early stopping fired before the epoch cap (it converged); *at cap* ran every epoch "
    "allowed, and *best in last 2* counts those whose best validation loss came in the last two epochs (still "
    "improving where they were cut). *CPU hours*: the records' training seconds summed over runs and folds / 3600 "
    "(one thread per run). Column labels say what ran (the records' split and folds); the rendered tables keep the "
    "paper's labels. Claims: only those with both cells run; verdicts as the table renders them."
)


def page_text(manifest: Manifest, entries: Sequence[RenderedEntry]) -> str:
    rel = posixpath.normpath(posixpath.join(manifest.home, manifest.path.name))
    data = " ".join(manifest.data)
    lines = [
        "# Results gallery: paper tables trained on real faces",
        "",
        f"_Generated by `ferbench gallery` from each folder's run records (`runs/`) and [`{manifest.path.name}`]"
        f"({manifest.path.name}) (titles, machines, the tables and overrides each folder was trained with). "
        "Do not edit this page by hand: change the manifest or the records, then rebuild it._",
        "",
        "Rebuild this page and every table, report and forest plot it links, from the committed records (trains "
        "nothing; the data sets must be on disk, since a cell's run id hashes its data's bytes):",
        "",
        "```bash",
        ("ferbench gallery" if rel == DEFAULT_MANIFEST.as_posix() else f"ferbench gallery --manifest {rel}")
        + f"   # finds the data with: {data or 'the config defaults'}",
        "ferbench gallery data_root=DIR data_dirs.ckplus=DIR/ckplus48   # data sets elsewhere",
        "```",
        "",
        HOW_TO_READ,
        "",
        *overview_lines(manifest, entries),
        "",
        *across_lines(manifest, entries),
    ]
    for rendered in entries:
        lines += entry_section(manifest, rendered)
    return "\n".join(lines).rstrip() + "\n"


def write_page(manifest: Manifest, entries: Sequence[RenderedEntry]) -> Path:
    return write_text(manifest.folder / "README.md", page_text(manifest, entries))


def gallery_command(argv: Sequence[str], build: Callable) -> Path:
    parser = argparse.ArgumentParser(
        prog="ferbench gallery",
        description="render every gallery folder's tables from its records and write the gallery's README.md",
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=f"default {DEFAULT_MANIFEST}")
    parser.add_argument("overrides", nargs="*", help="config overrides for every table: data_root=DIR ...")
    args = parser.parse_args(list(argv))
    manifest = load_manifest(args.manifest)
    entries = [render_entry(manifest, entry, args.overrides, build) for entry in manifest.entries]
    page = write_page(manifest, entries)  # draws the forest plots, which the reports then list among the figures
    from ferbench.results.report import write_reports

    for rendered in (e for e in entries if e.tables):
        write_reports({t.spec.paper for t in rendered.tables}, rendered.extra, rendered.entry.profile)
    tables = sum(len(e.tables) for e in entries)
    print(f"ferbench gallery: {len(entries)} folders, {tables} tables rendered from records -> {page}")
    return page
