"""A run's stored Grad-CAM maps: ``runs/<run_id>/gradcam.npz``, written by the Grad-CAM step (``ferbench.gradcam``)
from the run's best checkpoint, read by the figures (``results.figures``), which load no model.

Arrays (``n`` images, ``H x W`` the model's input)::

    source_run      str: the run whose test split gave the faces (a figure's first row: every row shows the same)
    fold            int: the fold whose test split and best checkpoint were used (0)
    n_images        int: how many faces the figure asked for (fewer are stored where the test split has fewer)
    sample_indices  int64 (n,): the faces' indices into the source run's images (``samples.csv.gz`` order)
    images          uint8 (n, H, W, C): the faces as the model saw them, before normalisation
    labels          int64 (n,): their true classes
    predicted       int64 (n,): the classes this run predicted
    maps            float16 (n, H, W): Grad-CAM of the true class at the last convolution, in [0, 1]
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferbench.records.atomic import write_stream

GRADCAM_FILE = "gradcam.npz"

log = logging.getLogger("ferbench")


@dataclass(frozen=True)
class GradcamRecord:
    source_run: str
    fold: int
    n_images: int
    sample_indices: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    maps: np.ndarray

    def same_faces(self, other: GradcamRecord) -> bool:
        """Both made on the same faces of the same run (what lets a figure put them in one column)."""
        return (
            self.source_run == other.source_run
            and self.fold == other.fold
            and np.array_equal(self.sample_indices, other.sample_indices)
            and np.array_equal(self.images, other.images)
        )


def gradcam_path(run_dir: Path) -> Path:
    return Path(run_dir) / GRADCAM_FILE


def has_gradcam(run_dir: Path) -> bool:
    """A complete run with stored maps (whether they read is ``read_gradcam``'s business)."""
    return gradcam_path(run_dir).is_file() and (Path(run_dir) / "metrics.csv").is_file()


def write_gradcam(run_dir: Path, record: GradcamRecord) -> Path:
    """Written to a temporary name and renamed; images as uint8 and maps as float16 keep it small."""
    arrays = {
        "source_run": np.array(record.source_run),
        "fold": np.array(record.fold, dtype=np.int64),
        "n_images": np.array(record.n_images, dtype=np.int64),
        "sample_indices": np.asarray(record.sample_indices, dtype=np.int64),
        "images": np.asarray(record.images, dtype=np.uint8),
        "labels": np.asarray(record.labels, dtype=np.int64),
        "predicted": np.asarray(record.predicted, dtype=np.int64),
        "maps": np.asarray(record.maps, dtype=np.float16),
    }
    return write_stream(gradcam_path(run_dir), lambda handle: np.savez_compressed(handle, **arrays))


def read_gradcam(run_dir: Path) -> GradcamRecord | None:
    """The run's stored maps; None where there are none, or where the file does not read (said in one line)."""
    path = gradcam_path(run_dir)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return GradcamRecord(
                source_run=str(data["source_run"]),
                fold=int(data["fold"]),
                n_images=int(data["n_images"]),
                sample_indices=data["sample_indices"],
                images=data["images"],
                labels=data["labels"],
                predicted=data["predicted"],
                maps=data["maps"],
            )
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("%s does not read (%s): its Grad-CAM maps are left out", path, exc)
        return None
