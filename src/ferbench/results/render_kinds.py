"""The non-grid table kinds: normalised confusion matrices, per-layer parameter tables, class counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ferbench.errors import ConfigError
from ferbench.records.atomic import write_atomic, write_csv, write_text
from ferbench.records.record import data_choice, run_dir
from ferbench.results.cells import CellResult
from ferbench.results.render import SMOKE_NOTE, deviation_note
from ferbench.results.spec import TableSpec

SYNONYMS = {
    "anger": "angry",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
    "neutrality": "neutral",
}


def canonical(name: str) -> str:
    """Class names as papers and data sets spell them ('Happiness', 'happy') -> one spelling."""
    key = name.strip().lower()
    return SYNONYMS.get(key, key)


def confusion_of(run_dirs: list[Path]) -> pd.DataFrame | None:
    """Counts summed over every fold of every run; rows = true, columns = predicted."""
    frames = [pd.read_csv(d / "confusion.csv") for d in run_dirs if (d / "confusion.csv").is_file()]
    if not frames:
        return None
    total = sum(f.drop(columns="fold").groupby("true", sort=False).sum() for f in frames)
    return total


def normalise_rows(counts: pd.DataFrame) -> pd.DataFrame:
    return counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0)


def _aligned(ours: pd.DataFrame, classes: list[str], spec: TableSpec) -> pd.DataFrame:
    """Re-order our matrix to the paper's class order (by canonical name)."""
    index = {canonical(c): c for c in ours.index}
    order = [index.get(canonical(c)) for c in classes]
    if None in order:
        missing = [c for c, o in zip(classes, order, strict=True) if o is None]
        raise ConfigError(
            f"{spec.path}: classes {missing} are not among the run's classes {list(ours.index)}; "
            "fix the table's classes (names as the paper spells them) or the data config"
        )
    return ours.loc[order, order].set_axis(classes, axis=0).set_axis(classes, axis=1)


def write_confusion(
    spec: TableSpec, plan, cell: CellResult, profile: str, out_dir: Path, deviations: Sequence[str] = ()
) -> dict[str, Path]:
    base = Path(out_dir) / spec.paper / spec.table
    results_dir = Path(out_dir).parent
    counts = confusion_of([run_dir(results_dir, r) for r in plan.run_ids]) if plan.run_ids else None
    compared = bool(spec.classes) and not cell.substituted  # synthetic stand-in data has its own classes
    classes = list(spec.classes) if compared else (list(counts.index) if counts is not None else [])
    paper = pd.DataFrame(spec.paper_values, index=classes, columns=classes) if spec.paper_values and compared else None
    lines = [f"### {spec.paper} — {spec.title}", "", f"Source: {spec.source}", ""]
    paths: dict[str, Path] = {}
    if counts is None:
        status = cell.status if cell.status != "ours" else "not run"
        lines.append(f"**{status}**" + (f" (looked in {cell.note})" if cell.status == "no data" else ""))
        lines += [f"- {p.kind}: run `{p.run_id}`: {p.detail}" for p in cell.problems]
        lines += [f"- failed: {cell.failure}"] if cell.failure else []
    else:
        ours = normalise_rows(_aligned(counts, classes, spec)) * (spec.paper_scale if spec.paper_scale else 1)
        grid = ours.copy().astype(object)
        for t in classes:
            for p in classes:
                grid.loc[t, p] = _matrix_text(ours.loc[t, p], None if paper is None else paper.loc[t, p])
        lines += _md_grid(grid)
        paths["csv"] = write_csv(base.with_suffix(".csv"), ours.reset_index(names="true"))
        paths["png"] = plot_confusion(ours / (spec.paper_scale or 1), f"{spec.title} (ours)", base.with_suffix(".png"))
        lines += ["", f"![confusion]({base.with_suffix('.png').name})"]
        lines.append("")
        lines.append(
            f"- Profile `{profile}`; {cell.protocol}; seeds {list(cell.seeds)}; epochs run {cell.epochs_run}"
            f" of max {cell.max_epochs}; rows = true class, row-normalised; cells read *ours (paper, Δ)*."
        )
        if profile == "smoke":
            lines.append(f"- {SMOKE_NOTE}")
        if deviations:
            lines.append(f"- {deviation_note(profile, deviations)}")
        if cell.substituted:
            lines.append(
                f"- † `{cell.substituted}` absent: smoke trained on `synthetic` (its own classes); "
                "the paper's matrix is not compared."
            )
    lines += [f"- {n}" for n in spec.notes]
    paths["md"] = write_text(base.with_suffix(".md"), "\n".join(lines) + "\n")
    return paths


def _matrix_text(ours: float, paper: float | None) -> str:
    if paper is None or (isinstance(paper, float) and math.isnan(paper)):
        return f"{ours:.2f}"
    return f"{ours:.2f} ({paper:.2f}, Δ {ours - paper:+.2f})"


def _md_grid(grid: pd.DataFrame) -> list[str]:
    lines = [
        "| true \\ predicted | " + " | ".join(map(str, grid.columns)) + " |",
        "|---" * (len(grid.columns) + 1) + "|",
    ]
    lines += [
        f"| {i} | " + " | ".join(map(str, row)) + " |" for i, row in zip(grid.index, grid.values.tolist(), strict=True)
    ]
    return lines


def plot_confusion(matrix: pd.DataFrame, title: str, path: Path) -> Path:
    """Heat map with class names and the rate in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), matrix.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            value = float(matrix.iat[i, j])
            if not math.isnan(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    color="white" if value > 0.5 else "black",
                    fontsize=8,
                )
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def render_static(spec: TableSpec, base_cfg: DictConfig, extra: list[str], out_dir: Path) -> dict[str, Path]:
    """``layers`` and ``counts`` tables need no training: a model profile, or a data set's counts."""
    from ferbench.config import compose_config

    cfg = compose_config([*spec.base, *spec.overrides, *extra])
    frame, notes = _layers(spec, cfg) if spec.kind == "layers" else _counts(spec, cfg)
    base = Path(out_dir) / spec.paper / spec.table
    lines = [f"### {spec.paper} — {spec.title}", "", f"Source: {spec.source}", ""]
    if frame is not None:
        lines += _md_grid(frame.astype(str).set_index(frame.columns[0]))
    lines += [""] + [f"- {n}" for n in [*notes, *spec.notes]]
    paths = {"md": write_text(base.with_suffix(".md"), "\n".join(lines) + "\n")}
    if frame is not None:
        paths["csv"] = write_csv(base.with_suffix(".csv"), frame)
    return paths


def _layers(spec: TableSpec, cfg: DictConfig) -> tuple[pd.DataFrame, list[str]]:
    from ferbench.factory import build_model
    from ferbench.models.profile import layer_table

    if not spec.classes:  # the classifier's parameters depend on the class count: the table says it, not the code
        raise ConfigError(f"{spec.path}: a layers table needs 'classes' (the paper's classes: its classifier's size)")
    model = build_model(cfg, num_classes=len(spec.classes))
    ours = layer_table(model, cfg.model.input_size, cfg.model.in_chans)
    param_col = next(c for c in ours.columns if "param" in c.lower())
    op_col = next((c for c in ours.columns if c.lower() in ("operator", "layer", "name")), ours.columns[0])
    rows = []
    for i, row in enumerate(spec.rows):
        paper = row.paper.get("params")
        mine = int(ours[param_col].iloc[i]) if i < len(ours) else None
        delta = "" if paper is None or mine is None else f"{mine - int(paper):+,}"
        rows.append(
            {
                "layer (paper)": row.label,
                "ours": ours[op_col].iloc[i] if i < len(ours) else "—",
                "params ours": "—" if mine is None else f"{mine:,}",
                "params paper": "—" if paper is None else f"{int(paper):,}",
                "Δ": delta,
            }
        )
    total = sum(p.numel() for p in model.parameters())
    notes = [f"Total parameters: ours {total:,} at {cfg.model.in_chans}x{cfg.model.input_size}x{cfg.model.input_size}."]
    return pd.DataFrame(rows), notes


def _counts(spec: TableSpec, cfg: DictConfig) -> tuple[pd.DataFrame | None, list[str]]:
    from ferbench.data.identity import load_source
    from ferbench.errors import DataError

    try:
        source = load_source(cfg)
    except DataError as exc:
        return None, [f"no data: {exc}"]
    counts = source.class_counts()
    counts["total"] = counts.sum(axis=1)
    counts = counts.reset_index(names="class")
    paper = {r.key: r.paper for r in spec.rows}
    for column in [c for c in counts.columns if c != "class"]:
        counts[column] = [
            f"{v} ({paper.get(canonical(k), {}).get(column, '—')})"
            for k, v in zip(counts["class"], counts[column], strict=True)
        ]
    return counts, [f"Cells read ours (paper). Data: {data_choice(cfg)} at {cfg.data.root}."]
