"""Figures beside the tables: Grad-CAM heat maps of trained runs, and training curves from history.

Declared in a table's YAML under ``figures:``, e.g. ``{kind: gradcam, rows: [baseline, cbam, mcbam],
column: fer2013, n_images: 6}`` or ``{kind: curves, metric: train_acc}``. Reads records only: the Grad-CAM maps are
computed by the Grad-CAM step (``ferbench.gradcam``, run by ``ferbench table``) and stored in each run's record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ferbench.records import record as rec
from ferbench.records.atomic import write_atomic
from ferbench.records.gradcam_record import GRADCAM_FILE, GradcamRecord, has_gradcam, read_gradcam
from ferbench.results.cells import CellResult

log = logging.getLogger("ferbench")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    _pyplot().close(fig)
    return path


def gradcam_figure(rows: Sequence[tuple[str, GradcamRecord]], classes: Sequence[str], path: Path, title: str) -> Path:
    """One row per trained run (same test faces for every row), heat maps over the input; each face says its true
    class, each map the class that run predicted (green when right), and the title which faces these are.

    Drawn from the runs' stored maps (``gradcam.npz``, made by the Grad-CAM step ``ferbench.gradcam``)."""
    plt = _pyplot()
    images, labels = rows[0][1].images, rows[0][1].labels
    fig, axes = plt.subplots(
        len(rows) + 1, len(images), figsize=(1.6 * len(images), 1.8 * (len(rows) + 1) + 0.4), squeeze=False
    )
    for j, image in enumerate(images):
        axes[0, j].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[0, j].set_title(f"true: {classes[labels[j]]}", fontsize=7)
    axes[0, 0].set_ylabel("input", fontsize=8)
    for i, (label, stored) in enumerate(rows, start=1):
        predicted, maps = stored.predicted.tolist(), stored.maps.astype(np.float32)
        for j, image in enumerate(images):
            axes[i, j].imshow(image.squeeze(), cmap="gray")
            axes[i, j].imshow(maps[j], cmap="jet", alpha=0.45)
            right = predicted[j] == labels[j]
            axes[i, j].set_xlabel(f"pred: {classes[predicted[j]]}", fontsize=7, color="green" if right else "red")
        axes[i, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def run_classes(run_dir: Path) -> list[str]:
    """The class names a run was trained on, as its record lists them."""
    return json.loads(pd.read_csv(run_dir / "metrics.csv")["classes"].iloc[0])


def curves_figure(cells: Sequence[CellResult], results_dir: Path, metric: str, path: Path) -> Path:
    """Mean ``metric`` per epoch for every row (over seeds and folds), from each run's history."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell in cells:
        paths = [rec.run_dir(results_dir, r) / "history.csv" for r in cell.run_ids]
        histories = [pd.read_csv(p) for p in paths if p.is_file()]
        if not histories:
            continue
        curve = pd.concat(histories).groupby("epoch")[metric].mean()
        ax.plot(curve.index, curve.to_numpy(), marker="o", markersize=3, label=cell.row_label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def render_figures(spec, cells: Sequence[CellResult], results_dir: Path) -> list[Path]:
    """Every figure a table declares; one that cannot be drawn yet (no trained run; for Grad-CAM, no stored maps) is
    skipped, a Grad-CAM figure with a one-line warning saying why."""
    out = Path(results_dir) / "figures" / spec.paper
    by_key = {(c.row, c.column): c for c in cells}
    written = []
    kinds = [f.get("kind") for f in spec.figures]
    for i, figure in enumerate(spec.figures):
        kind = figure.get("kind")
        path = out / f"{spec.table}_{kind}{'_' + str(i) if kinds.count(kind) > 1 else ''}.png"
        if kind == "curves":
            column = figure.get("column", spec.columns[0].key if spec.columns else "")
            chosen = [c for c in cells if c.column == column and c.run_ids and c.n]
            if chosen:
                written.append(curves_figure(chosen, Path(results_dir), figure.get("metric", "train_acc"), path))
        elif kind == "gradcam":
            drawn = _gradcam(spec, figure, cells, by_key, Path(results_dir), path)
            written += [drawn] if drawn else []
    return written


def _gradcam_title(spec, column: str, by_key: dict, run_dir: Path) -> str:
    """Which faces the figure shows; synthetic stand-ins (a smoke run without the column's data) said so."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    data = str(cfg.data.get("variant") or cfg.data.name)
    label = next((c.column_label for (_, col), c in by_key.items() if col == column), column)
    stand_in = next((c.substituted for (_, col), c in by_key.items() if col == column and c.substituted), None)
    faces = f"SYNTHETIC faces standing in for {stand_in}" if stand_in else f"{data} test faces"
    if data == "synthetic" and not stand_in:
        faces = "SYNTHETIC test faces"
    return f"{spec.paper} {spec.table}, {label}: Grad-CAM (last convolution) on {faces}, fold 0"


def _gradcam(
    spec, figure: dict, cells: Sequence[CellResult], by_key: dict, results_dir: Path, path: Path
) -> Path | None:
    """The figure from its rows' stored maps, or None with a one-line reason (no maps, or maps of other faces)."""
    n_images = int(figure.get("n_images", 6))
    column, rows = gradcam_rows(figure, cells, results_dir, has_gradcam)
    stored = [(label, read_gradcam(run_dir)) for label, run_dir in rows]
    why = _not_drawable(figure, stored, n_images)
    if why:
        log.warning("%s: Grad-CAM figure not drawn: %s", spec.name, why)
        return None
    drawn = {label for label, _ in rows}
    left_out = [k for k in figure.get("rows", []) if getattr(by_key.get((k, column)), "row_label", k) not in drawn]
    if left_out:  # drawn with fewer rows than the table file names: said, not left to be noticed
        log.warning(
            "%s: Grad-CAM figure drawn without row(s) %s: no run of theirs in column %s has stored maps",
            spec.name,
            ", ".join(left_out),
            column,
        )
    named = path.with_name(f"{path.stem}_{column}{path.suffix}") if column else path
    title = _gradcam_title(spec, column, by_key, rows[0][1])
    return gradcam_figure(stored, run_classes(rows[0][1]), named, title)


def _not_drawable(figure: dict, stored: list, n_images: int) -> str | None:
    """Why the stored maps cannot make this figure: none stored, or made for another figure (other faces, another
    number of them) than the first row's."""
    if not stored:
        columns = figure.get("column", "")
        columns = columns if isinstance(columns, str) else ", ".join(columns)
        return (
            f"no run of rows {', '.join(figure.get('rows', []))} in column {columns} has stored maps "
            f"({GRADCAM_FILE}: the Grad-CAM step of `ferbench table` makes them from the runs' checkpoints, "
            "not under --render-only)"
        )
    first = stored[0][1]
    for label, held in stored:
        if held is None or held.n_images != n_images or not held.same_faces(first):
            return (
                f"the maps stored for row {label} are not of the {n_images} faces this figure shows in every row; "
                "`ferbench table` without --render-only computes them again from the runs' checkpoints"
            )
    return None


def gradcam_rows(
    figure: dict, cells: Sequence[CellResult], results_dir: Path, usable: Callable[[Path], bool]
) -> tuple[str, list[tuple[str, Path]]]:
    """The first of the figure's columns (one, or a list in order of preference) where its rows have a ``usable``
    run (the Grad-CAM step: a checkpoint or stored maps; rendering: stored maps), with each row's first such run.
    The column key goes into the file name, so a figure never passes for another data set's."""
    by_key = {(c.row, c.column): c for c in cells}
    columns = figure.get("column", "")
    for column in [columns] if isinstance(columns, str) else list(columns):
        rows = []
        for key in figure.get("rows", []):
            cell = by_key.get((key, column))
            run_dirs = [rec.run_dir(results_dir, r) for r in cell.run_ids] if cell else []
            run_dir = next((d for d in run_dirs if usable(d)), None)
            if run_dir is not None:
                rows.append((cell.row_label, run_dir))
        if rows:
            return column, rows
    return "", []
