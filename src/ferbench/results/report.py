"""One Markdown report per paper: its rendered tables and figures, readable on GitHub."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ferbench.results.atomic import write_text
from ferbench.results.spec import all_specs


def write_reports(papers: Iterable[str], extra: Sequence[str] = ()) -> list[Path]:
    """``<results_dir>/report/<paper>.md`` from whatever ``results/tables/<paper>/`` holds now."""
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
                parts += [f"### {spec.paper} — {spec.title}", "", f"_not built yet: `ferbench table {spec.name}`_", ""]
        figures = sorted((results_dir / "figures" / paper).glob("*.png"))
        if figures:
            parts += ["## Figures", ""] + [f"![{f.stem}](../figures/{paper}/{f.name})" for f in figures]
        written.append(write_text(results_dir / "report" / f"{paper}.md", "\n".join(parts) + "\n"))
    return written
