"""The results gallery: complete run records copied, without checkpoints or caches, into a folder that is itself
a ``results_dir`` (``results/gallery/``), so ``ferbench table ... --render-only results_dir=results/gallery``
renders its tables again from what is committed.

``python -m ferbench.results.gallery SRC DST`` copies every complete run of ``SRC/runs`` into ``DST/runs``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ferbench.results import record as rec

RECORD_FILES = ("metrics.csv", "history.csv", "confusion.csv", "config.yaml", "folds.npz", "leakage.json")
"""What a run's gallery record keeps: enough to render, pair and judge claims; small (no weights, no images)."""
FOLD_FILES = ("metrics.json", "history.csv", "confusion.csv")
"""Each fold's own record (what a resumed run reuses), kept beside the run's files."""
OPTIONAL_FILES = ("samples.csv.gz",)
"""Copied where the run has them: the sample table (paths relative to the data root, labels, subjects)."""


def export_run(run_dir: Path, dst_runs: Path) -> Path:
    """Copy one complete run's record files into ``dst_runs/<run_id>/`` (an existing copy is replaced)."""
    target = dst_runs / run_dir.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in (*RECORD_FILES, *OPTIONAL_FILES):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)
    for fold in sorted(run_dir.glob("fold_*")):
        for name in FOLD_FILES:
            if (fold / name).is_file():
                (target / fold.name).mkdir(exist_ok=True)
                shutil.copy2(fold / name, target / fold.name / name)
    return target


def export(src: Path, dst: Path) -> list[Path]:
    """Every complete run under ``src/runs`` into ``dst/runs``; incomplete or failed runs are left out."""
    runs = Path(src) / "runs"
    complete = [d for d in sorted(runs.iterdir()) if d.is_dir() and rec.is_complete(d)] if runs.is_dir() else []
    return [export_run(d, Path(dst) / "runs") for d in complete]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ferbench.results.gallery", description=__doc__)
    parser.add_argument("src", type=Path, help="a results_dir the gallery's runs were trained into")
    parser.add_argument("dst", type=Path, help="the gallery (results/gallery)")
    args = parser.parse_args(argv)
    copied = export(args.src, args.dst)
    size = sum(f.stat().st_size for d in copied for f in d.rglob("*") if f.is_file())
    print(f"{len(copied)} complete runs copied into {args.dst / 'runs'} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
