"""The results gallery: complete run records copied, without checkpoints or caches, into a folder that is itself
a ``results_dir`` (``results/gallery/``), so ``ferbench table ... --render-only results_dir=results/gallery``
renders its tables again from what is committed.

``python -m ferbench.results.gallery SRC DST`` copies every complete run of ``SRC/runs`` into ``DST/runs``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ferbench.records import record as rec
from ferbench.records.atomic import write_atomic, write_csv, write_text
from ferbench.records.gradcam_record import GRADCAM_FILE

RECORD_FILES = (
    "metrics.csv",
    "history.csv",
    "confusion.csv",
    "config.yaml",
    "folds.npz",
    "leakage.json",
    "reidentified.json",
)
"""What a run's gallery record keeps: enough to render, pair and judge claims; small (no weights, no data set)."""
FOLD_FILES = ("metrics.json", "history.csv", "confusion.csv")
"""Each fold's own record (what a resumed run reuses), kept beside the run's files."""
OPTIONAL_FILES = ("samples.csv.gz", GRADCAM_FILE)
"""Copied where the run has them: the sample table (paths relative to the data root, labels, subjects), and the
Grad-CAM maps a figure draws (a few faces as uint8, their maps as float16: tens of kB), so the gallery, which keeps
no checkpoints, draws its Grad-CAM figures too."""


def export_run(run_dir: Path, dst_runs: Path) -> Path:
    """Copy one complete run's record files into ``dst_runs/<run_id>/`` (an existing copy is replaced)."""
    target = dst_runs / run_dir.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in (*RECORD_FILES, *OPTIONAL_FILES):
        if (run_dir / name).is_file():
            _copy(run_dir / name, target / name)
    for fold in sorted(run_dir.glob("fold_*")):
        for name in FOLD_FILES:
            if (fold / name).is_file():
                _copy(fold / name, target / fold.name / name)
    return target


def _copy(src: Path, dst: Path) -> None:
    """``src`` copied (with its dates) to a temporary name beside ``dst``, then renamed into place."""
    write_atomic(dst, lambda tmp: shutil.copy2(src, tmp))


def export(src: Path, dst: Path) -> list[Path]:
    """Every complete run under ``src/runs`` into ``dst/runs``; incomplete or failed runs are left out."""
    runs = rec.runs_dir(src)
    complete = [d for d in sorted(runs.iterdir()) if d.is_dir() and rec.is_complete(d)] if runs.is_dir() else []
    return [export_run(d, rec.runs_dir(dst)) for d in complete]


def reidentify(run_dir: Path) -> str | None:
    """Give a run trained under an earlier data fingerprint (ferbench before content digests: file dates were part
    of it, so every fresh copy of the data had other ids) the id its config and data have now.

    Checked first: the run's ``config.yaml`` and recorded fingerprint give back its recorded id, so only the
    fingerprint changes. The folder is renamed, the ``run_id`` and ``data_fingerprint`` of ``metrics.csv`` and the
    fold records rewritten, and ``reidentified.json`` says from what. Returns the new id, or None if unchanged.
    """
    import json

    import pandas as pd
    from omegaconf import OmegaConf

    from ferbench.data.identity import fingerprint_of

    metrics = pd.read_csv(run_dir / "metrics.csv")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    old_id, old_fingerprint = str(metrics["run_id"].iloc[0]), str(metrics["data_fingerprint"].iloc[0])
    if rec.run_id(cfg, old_fingerprint) != old_id:
        raise ValueError(f"{run_dir}: its config.yaml does not give back its recorded id {old_id}; left as it is")
    fingerprint = fingerprint_of(cfg)
    new_id = rec.run_id(cfg, fingerprint)
    if new_id == old_id:
        return None
    write_csv(run_dir / "metrics.csv", metrics.assign(run_id=new_id, data_fingerprint=fingerprint))
    for fold_record in run_dir.glob("fold_*/metrics.json"):
        record = json.loads(fold_record.read_text())
        record.update(run_id=new_id, data_fingerprint=fingerprint)
        write_text(fold_record, json.dumps(record, indent=1))
    note = {
        "old_run_id": old_id,
        "old_data_fingerprint": old_fingerprint,
        "data_fingerprint": fingerprint,
        "why": "trained under ferbench's earlier data fingerprint (file dates); same config, same data bytes",
    }
    write_text(run_dir / "reidentified.json", json.dumps(note, indent=1))
    run_dir.rename(run_dir.with_name(new_id))
    return new_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ferbench.results.gallery", description=__doc__)
    parser.add_argument("src", type=Path, help="a results_dir the gallery's runs were trained into")
    parser.add_argument("dst", type=Path, help="the gallery (results/gallery)")
    parser.add_argument(
        "--reidentify", action="store_true", help="give runs trained under an earlier data fingerprint today's ids"
    )
    args = parser.parse_args(argv)
    copied = export(args.src, args.dst)
    if args.reidentify:
        for run_dir in copied:
            if (new_id := reidentify(run_dir)) is not None:
                print(f"{run_dir.name} -> {new_id}")
        copied = [d for d in sorted(rec.runs_dir(args.dst).iterdir()) if d.is_dir()]
    size = sum(f.stat().st_size for d in copied for f in d.rglob("*") if f.is_file())
    print(f"{len(copied)} complete runs copied into {rec.runs_dir(args.dst)} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
