"""One Markdown report per paper: its rendered tables and figures, readable on GitHub."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ferbench.records.atomic import write_text
from ferbench.results.spec import TableSpec, all_specs


def write_reports(papers: Iterable[str], extra: Sequence[str] = (), profile: str = "smoke") -> list[Path]:
    """``<results_dir>/report/<paper>.md`` from whatever ``results/tables/<paper>/`` holds now; a table not built
    yet says the command that builds it, with this report's profile and results folder."""
    from ferbench.config import compose_config

    results_dir = Path(compose_config(list(extra)).results_dir)
    written = []
    for paper in sorted(papers):
        specs = [s for s in all_specs() if s.paper == paper]
        parts = [f"# {paper}: tables rebuilt by ferbench", ""]
        for spec in specs:
            md = results_dir / "tables" / paper / f"{spec.table}.md"
            if md.is_file():
                text = md.read_text().replace("](", f"](../tables/{paper}/")
                parts += [text, ""]
            else:
                build = f"ferbench table {spec.name} profile={profile} results_dir={results_dir}"
                parts += [f"### {spec.paper} — {spec.title}", "", f"_not built yet: `{build}`_", ""]
        parts += claims_section(results_dir, paper, [s.table for s in specs])
        figures = sorted((results_dir / "figures" / paper).glob("*.png"))
        if figures:
            parts += ["## Figures", ""] + [f"![{f.stem}](../figures/{paper}/{f.name})" for f in figures]
        written.append(write_text(results_dir / "report" / f"{paper}.md", "\n".join(parts) + "\n"))
    written.append(write_claims_page(results_dir))
    return written


def read_claims(results_dir: Path, paper: str, tables: Sequence[str]) -> pd.DataFrame:
    """The rendered tables' ``<table>.claims.csv`` rows, in the paper's table order (empty if none)."""
    frames = []
    for table in tables:
        path = Path(results_dir) / "tables" / paper / f"{table}.claims.csv"
        if path.is_file() and path.stat().st_size:
            frames.append(pd.read_csv(path, keep_default_na=False))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def claims_section(results_dir: Path, paper: str, tables: Sequence[str]) -> list[str]:
    """'## Claims': every claim of the paper's rendered tables, with its verdict and test, and a tally."""
    claims = read_claims(results_dir, paper, tables)
    if claims.empty:
        return []
    tally = ", ".join(f"{n} {v}" for v, n in claims["verdict"].value_counts().items())
    lines = ["## Claims", "", f"{len(claims)} claim × column checks: {tally}.", ""]
    for table, group in claims.groupby("table", sort=False):
        lines += [f"**{table}**", ""] + [f"- {text}" for text in group["text"]] + [""]
    return lines


def write_claims_page(results_dir: Path, specs: Sequence[TableSpec] | None = None) -> Path:
    """``report/claims.md``: one page across papers, one line per claim and column, from the rendered tables."""
    rows = []
    for spec in all_specs() if specs is None else specs:
        claims = read_claims(results_dir, spec.paper, [spec.table])
        rows += claims.to_dict("records")
    lines = [
        "# Does the paper's claim hold?",
        "",
        "Every claim a paper states (in its text or by its ablation order), tested on ferbench's own runs: "
        "paired over matched seed × fold runs (corrected resampled t-test where folds share training data), "
        "Holm-corrected over each table's claims, p < 0.05. Rebuilt by `ferbench table`.",
        "",
    ]
    if not rows:
        lines.append("_No table with claims rendered yet._")
    else:
        frame = pd.DataFrame(rows)
        tally = ", ".join(f"{n} {v}" for v, n in frame["verdict"].value_counts().items())
        lines += [
            f"{len(frame)} checks: {tally}.",
            "",
            "| paper | table | claim | where | verdict | difference | Holm p | n | source |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            lines.append(
                f"| {r['paper']} | {r['table']} | {r['claim']} | {r['where']} | {r['verdict']} | "
                f"{r['difference'] or '—'} | {_p(r['holm_p'])} | {r['n']} | {r['source']} |"
            )
    return write_text(Path(results_dir) / "report" / "claims.md", "\n".join(lines) + "\n")


def _p(value) -> str:
    return "—" if value in ("", None) or pd.isna(value) else f"{float(value):.3g}"
