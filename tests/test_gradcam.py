"""The Grad-CAM step stores each run's maps in its record; the figure draws from them alone (no model, no checkpoint,
no Grad-CAM), so the gallery draws it too; and nothing under ``results/`` imports model code."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from ferbench.records.gradcam_record import GRADCAM_FILE, read_gradcam
from ferbench.results.spec import load_spec
from ferbench.tables import build_table

TABLE = {
    "paper": "paperx",
    "table": "t1",
    "title": "Tiny ablation",
    "paper_scale": 100,
    "base": ["model=simplecnn", "model.widths=[8,16]", "aug=none"],
    "profiles": {"smoke": ["trainer.max_epochs=1", "trainer.batch_size=32"]},
    "columns": [
        {
            "key": "syn",
            "label": "Synthetic",
            "overrides": ["data=synthetic", "data.options.n_train=70", "data.options.n_test=35"],
        },
    ],
    "rows": [
        {"key": "a", "label": "A", "overrides": ["model.drop_rate=0.0"]},
        {"key": "b", "label": "B", "overrides": ["model.drop_rate=0.1"]},
    ],
    "figures": [
        {"kind": "gradcam", "rows": ["a", "b"], "column": ["nothing_ran_here", "syn"], "n_images": 3},
        {"kind": "curves", "metric": "train_acc", "column": "syn"},
    ],
}


@pytest.fixture
def figure_texts(monkeypatch) -> dict[str, list[str]]:
    """What each figure says (suptitle, then every axis title and x label), read before it becomes pixels."""
    from ferbench.results import figures

    texts: dict[str, list[str]] = {}
    real_save = figures._save

    def save(fig, path):
        titles = [ax.get_title() for ax in fig.axes] + [ax.get_xlabel() for ax in fig.axes]
        texts[path.name] = [fig._suptitle.get_text() if fig._suptitle else "", *titles]
        return real_save(fig, path)

    monkeypatch.setattr(figures, "_save", save)
    return texts


def _run_dirs(results: Path) -> dict[str, Path]:
    """Row key -> its run folder (the rows differ only in model.drop_rate)."""
    runs = {}
    for run_dir in sorted((results / "runs").iterdir()):
        drop_rate = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["drop_rate"]
        runs["a" if drop_rate == 0.0 else "b"] = run_dir
    return runs


def test_gradcam_step_stores_maps_and_the_figure_draws_from_them_alone(tmp_path, figure_texts, monkeypatch, caplog):
    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(TABLE))
    spec = load_spec(path)
    results = tmp_path / "results"
    extra = [f"results_dir={results}", f"cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=2"]

    outcome = build_table(spec, "smoke", extra)  # trains both rows, stores their maps, draws
    gradcam = figure_texts["t1_gradcam_syn.png"]
    assert "Grad-CAM" in gradcam[0] and "SYNTHETIC" in gradcam[0]  # the title says the faces are synthetic
    assert sum(t.startswith("true: ") for t in gradcam) == 3  # the input row: each face's class
    assert sum(t.startswith("pred: ") for t in gradcam) == 6  # each run's prediction under each map
    figures_dir = results / "figures" / "paperx"
    assert sorted(p.name for p in figures_dir.glob("*.png")) == ["t1_curves.png", "t1_gradcam_syn.png"]
    assert "t1_gradcam_syn.png" in outcome.paths["md"].read_text()
    png = (figures_dir / "t1_gradcam_syn.png").read_bytes()

    # the record: both rows' maps of the same faces, those of the first row's run, chosen as before the step existed
    runs = _run_dirs(results)
    a, b = read_gradcam(runs["a"]), read_gradcam(runs["b"])
    assert a.source_run == b.source_run == runs["a"].name and a.same_faces(b) and a.n_images == 3
    labels = pd.read_csv(runs["a"] / "samples.csv.gz")["label"].to_numpy()
    test = np.load(runs["a"] / "folds.npz")["test_0"]
    first_of_each_class = [int(test[labels[test] == k][0]) for k in range(3)]  # round-robin from class 0
    assert a.sample_indices.tolist() == first_of_each_class and a.labels.tolist() == [0, 1, 2]
    assert a.images.dtype == np.uint8 and a.images.shape[:1] == (3,)
    assert a.maps.dtype == np.float16 and a.maps.shape == a.images.shape[:3]
    assert 0 <= a.maps.min() and a.maps.max() <= 1 and a.maps.max() > 0
    classes = json.loads(pd.read_csv(runs["a"] / "metrics.csv")["classes"].iloc[0])
    shown = [t.removeprefix("pred: ") for t in gradcam if t.startswith("pred: ")]
    assert shown == [classes[p] for p in [*a.predicted, *b.predicted]]  # the figure shows the stored predictions
    assert (runs["a"] / GRADCAM_FILE).stat().st_size < 20_000

    # render-only with checkpoints but without the maps: the figure is not drawn, and two lines say why
    for run_dir in runs.values():
        (run_dir / GRADCAM_FILE).unlink()
    (figures_dir / "t1_gradcam_syn.png").unlink()
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        build_table(spec, "smoke", extra, render_only=True)
    assert "have checkpoints but not this figure's Grad-CAM maps" in caplog.text
    assert "paperx/t1: Grad-CAM figure not drawn: no run of rows a, b" in caplog.text
    assert not (figures_dir / "t1_gradcam_syn.png").exists()

    # the step again (records complete, nothing trains): the same maps, so the same figure, byte for byte
    build_table(spec, "smoke", extra)
    assert (figures_dir / "t1_gradcam_syn.png").read_bytes() == png
    stamps = {d: (d / GRADCAM_FILE).stat().st_mtime_ns for d in runs.values()}
    build_table(spec, "smoke", extra)
    assert {d: (d / GRADCAM_FILE).stat().st_mtime_ns for d in runs.values()} == stamps  # kept, not recomputed

    # the gallery keeps no checkpoints; with checkpoints deleted here too, and no model code nor Grad-CAM to import,
    # render-only draws the same figure from the stored maps
    from ferbench.results.gallery import export

    gallery = tmp_path / "gallery"
    export(results, gallery)
    for checkpoint in results.rglob("*.ckpt"):
        checkpoint.unlink()
    assert not list(gallery.rglob("*.ckpt")) and len(list(gallery.rglob(GRADCAM_FILE))) == 2

    def no_models(*args, **kwargs):
        raise AssertionError("rendering loaded a checkpoint")

    monkeypatch.setattr(torch, "load", no_models)
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "ferbench.factory", None)
    figure_texts.clear()
    for where in (results, gallery):
        build_table(spec, "smoke", [f"results_dir={where}", *extra[1:]], render_only=True)
        assert figure_texts.pop("t1_gradcam_syn.png") == gradcam
        assert (where / "figures" / "paperx" / "t1_gradcam_syn.png").read_bytes() == png

    # without stored maps (and no checkpoints), render-only skips the figure with one line
    for stored in gallery.rglob(GRADCAM_FILE):
        stored.unlink()
    caplog.clear()
    (gallery / "figures" / "paperx" / "t1_gradcam_syn.png").unlink()
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        build_table(spec, "smoke", [f"results_dir={gallery}", *extra[1:]], render_only=True)
    lines = [r.getMessage() for r in caplog.records if "Grad-CAM" in r.getMessage()]
    assert lines == [
        "paperx/t1: Grad-CAM figure not drawn: no run of rows a, b in column nothing_ran_here, syn has stored maps "
        "(gradcam.npz: the Grad-CAM step of `ferbench table` makes them from the runs' checkpoints, "
        "not under --render-only)"
    ]
    assert not (gallery / "figures" / "paperx" / "t1_gradcam_syn.png").exists()


MODEL_CODE = ("torch", "pytorch_grad_cam", "pytorch_lightning", "lightning", "ferbench.factory", "ferbench.gradcam")
"""What rendering must not import: it reads records, and the Grad-CAM step (``ferbench.gradcam``) loads models."""
STILL_BUILDS_MODELS = {"render_kinds.py": {"ferbench.factory", "ferbench.models.profile"}}
"""Known and left for now: the ``layers`` table kind builds each model to list its layers."""


def _imports(path: Path) -> set[str]:
    """Every module a file imports (``from a.b import c``: ``a.b`` and ``a.b.c``), at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["ferbench", "results", *([base] if base else [])])
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


def _within(name: str, modules) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def test_results_imports_no_model_code():
    import ferbench.results

    results_src = Path(ferbench.results.__file__).parent
    assert {"figures.py", "gallery.py", "render.py"} <= {p.name for p in results_src.glob("*.py")}
    assert _within("torch.nn", MODEL_CODE) and not _within("torchvision", MODEL_CODE)
    bad = {}
    for path in sorted(results_src.glob("*.py")):
        allowed = STILL_BUILDS_MODELS.get(path.name, set())
        found = {n for n in _imports(path) if not _within(n, allowed)}
        forbidden = sorted(n for n in found if _within(n, (*MODEL_CODE, "ferbench.models", "ferbench.training")))
        if forbidden:
            bad[path.name] = forbidden
    assert bad == {}
    # and not through what they import either: loading the figures and the gallery loads no model code
    code = "import json, sys, ferbench.results.figures, ferbench.results.gallery; print(json.dumps(list(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert [m for m in json.loads(loaded) if _within(m, MODEL_CODE)] == []


def test_gradcam_faces_of_a_copies_run_are_the_images_its_split_indexes(tmp_path):
    """``split=paper_copies`` indexes the copies (5 per image): Grad-CAM picks from them, not from the originals
    (before: the test indices ran past the originals, an IndexError, or other faces than the split's)."""
    from ferbench.config import compose_config
    from ferbench.gradcam import pick_test_images
    from ferbench.run import run

    cfg = compose_config(
        [
            "model=simplecnn",
            "model.widths=[8,16]",
            "aug=none",
            "data=synthetic",
            "data.options.n_train=30",
            "data.options.n_test=10",
            "split=paper_copies",
            "trainer.max_epochs=1",
            "trainer.batch_size=32",
            "trainer.progress_bar=false",
            "trainer.threads=1",
            f"results_dir={tmp_path / 'results'}",
            f"cache_dir={tmp_path / 'cache'}",
        ]
    )
    record = run(cfg)
    run_dir = Path(record.run_dir)
    samples = pd.read_csv(run_dir / "samples.csv.gz")
    test = np.load(run_dir / "folds.npz")["test_0"]
    assert test.max() >= 40  # the split indexes copies beyond the 40 originals

    indices, images, labels = pick_test_images(run_dir, OmegaConf.load(run_dir / "config.yaml"), n_images=4)
    assert set(indices.tolist()) <= set(test.tolist())
    assert labels.tolist() == samples["label"].to_numpy()[indices].tolist()
    assert images.shape[0] == 4
