"""Figures beside the tables: Grad-CAM heat maps of trained runs, and training curves from history.

Declared in a table's YAML under ``figures:``, e.g. ``{kind: gradcam, rows: [baseline, cbam, mcbam],
column: fer2013, n_images: 6}`` or ``{kind: curves, metric: train_acc}``. Reads records and checkpoints only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn

from ferbench.records import record as rec
from ferbench.records.atomic import write_atomic
from ferbench.results.cells import CellResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    _pyplot().close(fig)
    return path


def load_trained_model(run_dir: Path, fold: int = 0) -> tuple[nn.Module, object]:
    """The fold's best checkpoint, rebuilt from the run's own resolved config."""
    from ferbench.factory import build_model

    cfg = OmegaConf.load(run_dir / "config.yaml")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    classes = json.loads(metrics["classes"].iloc[0])
    model = build_model(cfg, num_classes=len(classes))
    checkpoint = rec.best_checkpoint(run_dir, fold)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.eval(), cfg


def test_images(run_dir: Path, cfg, n_images: int, fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first test image of each class (then more, round-robin) from the run's own split."""
    from ferbench.data.identity import load_source
    from ferbench.factory import prepare

    source = load_source(cfg)
    prepared = prepare(cfg, source, progress=False)
    labels = source.samples["label"].to_numpy()[prepared.keep]
    test = np.load(run_dir / "folds.npz")[f"test_{fold}"]
    by_class = [test[labels[test] == k].tolist() for k in range(labels.max() + 1)]
    chosen: list[int] = []
    while len(chosen) < n_images and any(by_class):
        for members in by_class:
            if members and len(chosen) < n_images:
                chosen.append(members.pop(0))
    return prepared.images[chosen], labels[chosen]


def last_conv(model: nn.Module) -> nn.Module:
    """Grad-CAM's target: the last convolution, where spatial maps are most semantic."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    return (convs or [m for m in model.modules() if isinstance(m, nn.Conv2d)])[-1]


def gradcam_maps(model: nn.Module, batch: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[last_conv(model)]) as cam:
        return cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def gradcam_figure(rows: Sequence[tuple[str, Path]], n_images: int, path: Path, title: str = "") -> Path:
    """One row per trained run (same test faces for every row), heat maps over the input; each face says its true
    class, each map the class that run predicted (green when right), and the title which faces these are."""
    from ferbench.data.transforms import to_tensor

    plt = _pyplot()
    first_model, cfg = load_trained_model(rows[0][1])
    classes = run_classes(rows[0][1])
    images, labels = test_images(rows[0][1], cfg, n_images)
    fig, axes = plt.subplots(
        len(rows) + 1, len(images), figsize=(1.6 * len(images), 1.8 * (len(rows) + 1) + 0.4), squeeze=False
    )
    for j, image in enumerate(images):
        axes[0, j].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[0, j].set_title(f"true: {classes[labels[j]]}", fontsize=7)
    axes[0, 0].set_ylabel("input", fontsize=8)
    for i, (label, run_dir) in enumerate(rows, start=1):
        model, _ = load_trained_model(run_dir) if i > 1 else (first_model, cfg)
        batch = to_tensor(images)
        with torch.no_grad():
            predicted = model(batch).argmax(dim=1).tolist()
        maps = gradcam_maps(model, batch, labels)
        for j, image in enumerate(images):
            axes[i, j].imshow(image.squeeze(), cmap="gray")
            axes[i, j].imshow(maps[j], cmap="jet", alpha=0.45)
            right = predicted[j] == labels[j]
            axes[i, j].set_xlabel(f"pred: {classes[predicted[j]]}", fontsize=7, color="green" if right else "red")
        axes[i, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    data = str(cfg.data.get("variant") or cfg.data.name)
    fig.suptitle(title or f"Grad-CAM (last convolution) on {data} test faces, fold 0", fontsize=9)
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
    """Every figure a table declares; one that cannot be drawn yet (no trained run) is skipped."""
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
            column, rows = _gradcam_rows(figure, by_key, Path(results_dir))
            if rows:
                named = path.with_name(f"{path.stem}_{column}{path.suffix}") if column else path
                title = _gradcam_title(spec, column, by_key, rows[0][1])
                written.append(gradcam_figure(rows, int(figure.get("n_images", 6)), named, title))
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


def _gradcam_rows(figure: dict, by_key: dict, results_dir: Path) -> tuple[str, list[tuple[str, Path]]]:
    """The first of the figure's columns (one, or a list in order of preference) where its rows have trained
    models; the column key goes into the file name, so a figure never passes for another data set's."""
    columns = figure.get("column", "")
    for column in [columns] if isinstance(columns, str) else list(columns):
        rows = []
        for key in figure.get("rows", []):
            cell = by_key.get((key, column))
            run_dir = _first_checkpointed(cell, results_dir) if cell else None
            if run_dir is not None:
                rows.append((cell.row_label, run_dir))
        if rows:
            return column, rows
    return "", []


def _first_checkpointed(cell: CellResult, results_dir: Path) -> Path | None:
    for run_id in cell.run_ids:
        run_dir = rec.run_dir(results_dir, run_id)
        if rec.best_checkpoint(run_dir, 0).is_file() and (run_dir / "metrics.csv").is_file():
            return run_dir
    return None
