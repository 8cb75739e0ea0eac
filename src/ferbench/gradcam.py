"""The Grad-CAM step: trained runs' best checkpoints, rebuilt through the factory, explain the same few test faces,
and each run's maps go into its own record (``runs/<run_id>/gradcam.npz``, format in ``records.gradcam_record``).

``ferbench table`` runs it after training, for the tables whose spec declares a ``gradcam`` figure; the figure
(``results.figures``) then draws from the stored maps alone, so ``--render-only`` and the gallery, which keep no
checkpoints, draw it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn

from ferbench.errors import DataError, FerbenchError, UnsafeFile
from ferbench.records import record as rec
from ferbench.records.gradcam_record import GradcamRecord, read_gradcam, write_gradcam
from ferbench.records.integrity import set_aside
from ferbench.records.safe_load import load_weights

log = logging.getLogger("ferbench")


def load_trained_model(run_dir: Path, fold: int = 0) -> tuple[nn.Module, object]:
    """The fold's best checkpoint, rebuilt from the run's own resolved config."""
    from ferbench.factory import task_for

    cfg = OmegaConf.load(run_dir / "config.yaml")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    classes = json.loads(metrics["classes"].iloc[0])
    model = task_for(cfg).model(cfg, len(classes))
    state = best_weights(rec.best_checkpoint(run_dir, fold))
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.eval(), cfg


def best_weights(checkpoint: Path) -> dict:
    """The ``state_dict`` of a best checkpoint, loaded weights-only (a planted file runs no code: ``UnsafeFile``).

    One that is truncated or holds no state dict is set aside, said in one line, and raises ``DataError``: the
    caller skips that run's Grad-CAM row, not the table."""
    try:
        state = load_weights(checkpoint, "Grad-CAM")
    except UnsafeFile:
        raise
    except Exception as exc:  # torch's zip reader, pickle and EOF errors alike: not a checkpoint to explain
        reason = f"cannot be read: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:80]}"
    else:
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            return state["state_dict"]
        reason = "not a checkpoint: it holds no state_dict"
    aside = set_aside(checkpoint, reason, "its run's Grad-CAM row is skipped")
    raise DataError(f"{checkpoint} was corrupt (kept as {aside.name})")


def pick_test_images(run_dir: Path, cfg, n_images: int, fold: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first test image of each class (then more, round-robin) from the run's own split: their indices into
    the run's images, the images, their labels. The images are the run's as it trained on them (``load_run_data``:
    cropped, corrupt files left out, ``split=paper_copies``'s copies made), so the split's indices point at them."""
    from ferbench.data.identity import load_source
    from ferbench.run import load_run_data

    data = load_run_data(cfg, load_source(cfg), fingerprint="", progress=False)
    test = np.load(run_dir / "folds.npz")[f"test_{fold}"]
    labels = data.labels
    by_class = [test[labels[test] == k].tolist() for k in range(labels.max() + 1)]
    chosen: list[int] = []
    while len(chosen) < n_images and any(by_class):
        for members in by_class:
            if members and len(chosen) < n_images:
                chosen.append(members.pop(0))
    return np.asarray(chosen, dtype=np.int64), data.images[chosen], labels[chosen]


def last_conv(model: nn.Module) -> nn.Module:
    """Grad-CAM's target: the last convolution, where spatial maps are most semantic."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    return (convs or [m for m in model.modules() if isinstance(m, nn.Conv2d)])[-1]


def gradcam_maps(model: nn.Module, batch: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[last_conv(model)]) as cam:
        return cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def has_checkpoint(run_dir: Path, fold: int = 0) -> bool:
    """A complete run whose fold kept its best checkpoint (the gallery keeps none)."""
    return rec.best_checkpoint(run_dir, fold).is_file() and (Path(run_dir) / "metrics.csv").is_file()


def explain_run(run_dir: Path, faces: GradcamRecord, fold: int = 0) -> GradcamRecord:
    """``run_dir``'s best model on ``faces`` (their images and true labels): its predictions and Grad-CAM maps."""
    from ferbench.data.transforms import to_tensor

    model, _ = load_trained_model(run_dir, fold)
    batch = to_tensor(faces.images)
    with torch.no_grad():
        predicted = model(batch).argmax(dim=1).numpy()
    maps = gradcam_maps(model, batch, faces.labels)
    return GradcamRecord(
        faces.source_run, fold, faces.n_images, faces.sample_indices, faces.images, faces.labels, predicted, maps
    )


def chosen_faces(source: Path, n_images: int, fold: int = 0) -> GradcamRecord:
    """The faces a figure shows, from ``source``'s test split (its data read and prepared as it was trained)."""
    cfg = OmegaConf.load(Path(source) / "config.yaml")
    indices, images, labels = pick_test_images(Path(source), cfg, n_images, fold)
    empty = np.zeros(0, dtype=np.int64)
    return GradcamRecord(Path(source).name, fold, n_images, indices, images, labels, empty, empty)


def stale_gradcam(run_dirs: Sequence[Path], n_images: int, fold: int = 0) -> list[Path]:
    """The runs with a checkpoint whose stored maps are missing, unreadable, or not of the first run's faces for a
    figure of ``n_images``: what ``ensure_gradcam`` computes."""
    source = Path(run_dirs[0])
    stale = [Path(d) for d in run_dirs if not _current(read_gradcam(d), source, n_images, fold)]
    return [d for d in stale if has_checkpoint(d, fold)]


def _current(held: GradcamRecord | None, source: Path, n_images: int, fold: int) -> bool:
    return held is not None and (held.source_run, held.fold, held.n_images) == (source.name, fold, n_images)


def ensure_gradcam(run_dirs: Sequence[Path], n_images: int, fold: int = 0) -> list[Path]:
    """Every run's maps on the first run's test faces, in each run's record; maps already stored for these faces
    are kept, and a run without a checkpoint keeps what it has. Returns the files written.

    Faces that cannot be chosen (the first run's data absent or unreadable) are said in one line, and so is each run
    whose checkpoint is corrupt or refused (its row skipped); the table goes on.
    """
    todo = stale_gradcam(run_dirs, n_images, fold)
    if not todo:
        return []
    source = Path(run_dirs[0])
    try:
        held = read_gradcam(source)
        faces = held if _current(held, source, n_images, fold) else chosen_faces(source, n_images, fold)
    except FerbenchError as exc:
        log.warning("Grad-CAM maps of %s not computed: %s", ", ".join(d.name for d in todo), exc)
        return []
    written: list[Path] = []
    for run_dir in todo:
        try:
            written.append(write_gradcam(run_dir, explain_run(run_dir, faces, fold)))
        except FerbenchError as exc:  # this run's checkpoint: the other rows still get their maps
            log.warning("Grad-CAM row skipped: no maps for %s: %s", run_dir.name, exc)
    return written
