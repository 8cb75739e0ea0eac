"""``run(cfg) -> RunRecord``: one experiment, every fold, recorded. What the CLI and tests call."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from ferbench.config import validate
from ferbench.data import DataSource
from ferbench.data.copies import expand_copies
from ferbench.data.identity import data_fingerprint, data_root, load_source
from ferbench.data.leakage import write_run_leakage
from ferbench.data.splits import Fold, run_folds
from ferbench.errors import FerbenchError, RunFailed
from ferbench.factory import prepare, task_for
from ferbench.records import record as rec
from ferbench.records.atomic import write_atomic, write_csv, write_stream, write_text
from ferbench.records.integrity import set_aside_damaged_metrics
from ferbench.records.run_folder import disk_full_keeps_folds, ensure_writable, half_made_removed, remove_half_made
from ferbench.training.fold import FoldData, FoldResult, RunWork, Task, failure_line, write_fold_result
from ferbench.training.packing import Recorder, has_packed_state, pack_limit, train_packed
from ferbench.training.solo import train_solo
from ferbench.training.trainer import configure_cpu
from ferbench.training.warm_start import init_source, load_matching

log = logging.getLogger("ferbench")


def check_model(cfg: DictConfig, num_classes: int) -> None:
    """Build the model and load ``model.init``'s weights into it once, so that a wrong switch or a missing,
    unreadable or foreign checkpoint fails before the run's folder exists, not in its first fold."""
    model = task_for(cfg).model(cfg, num_classes)
    if cfg.model.get("init"):
        load_matching(model, init_source(str(cfg.model.init), Path(cfg.results_dir)))


def save_split(run_dir: Path, samples: pd.DataFrame, folds: list[Fold]) -> None:
    """Indices saved with the run, so any number traces back to the exact images."""
    write_atomic(run_dir / "samples.csv.gz", lambda tmp: samples.to_csv(tmp, index=False, compression="gzip"))
    arrays = {f"{part}_{f.index}": getattr(f, part) for f in folds for part in ("train", "val", "test")}
    write_stream(run_dir / "folds.npz", lambda handle: np.savez_compressed(handle, **arrays))


def is_primary() -> bool:
    """Rank 0 records; under DDP the other ranks (started by Lightning, torchrun or srun) only train."""
    return rank_zero_only.rank == 0


def run(cfg: DictConfig) -> rec.RunRecord:
    """Train and test every fold of one experiment; reuse a complete record, resume a partial one.

    A run being trained by another process (its ``.lock`` held) raises RunBusy: never trained twice at once.
    """
    validate(cfg)
    source = load_source(cfg)
    fingerprint = data_fingerprint(source, data_root(cfg))
    run_id = rec.run_id(cfg, fingerprint)
    run_dir = rec.run_dir(cfg.results_dir, run_id)
    if rec.is_complete(run_dir):
        return rec.RunRecord.load(run_dir)
    configure_cpu(cfg.trainer)
    data = load_run_data(cfg, source, fingerprint)  # data and model errors fail here, before the run's folder
    check_model(cfg, len(source.classes))
    if not is_primary():
        return _train_run(cfg, run_id, run_dir, data)
    existed = run_dir.exists()
    ensure_writable(run_dir)
    with (
        rec.run_lock(run_dir),
        _own_ddp_session(),
        disk_full_keeps_folds(run_dir),
        half_made_removed(run_dir, existed),
    ):
        if rec.is_complete(run_dir):  # finished by another process between our check and the lock
            return rec.RunRecord.load(run_dir)
        set_aside_damaged_metrics(run_dir)
        return _train_run(cfg, run_id, run_dir, data)


@dataclass
class RunData:
    """What a run trains on: decoded, split and checked before its folder exists."""

    source: DataSource
    fingerprint: str
    images: np.ndarray
    samples: pd.DataFrame
    labels: np.ndarray
    folds: list[Fold]
    skipped: dict[str, int]
    skipped_files: pd.DataFrame
    """path and reason of every image left out (``data.skip_corrupt``): written as the run's skipped.csv."""
    task: Task
    """The factory's entry for the config's ``model.task``: what each fold is built from."""
    targets: list[np.ndarray] | None = None
    """What each image trains on besides its label (``Task.targets``: a detector's face boxes); None: labels."""
    cache_path: Path | None = None
    """The preprocessed array's cache file (image hashes for leakage.json are kept beside it)."""

    @property
    def classes(self) -> list[str]:
        return list(self.source.classes)

    @property
    def fold_data(self) -> FoldData:
        """What the trainers see of it."""
        return FoldData(self.images, self.labels, self.classes, self.task, self.targets)

    def recorder(self) -> Recorder:
        """Writes a fold's record from a trainer's result (rank 0 only); returns the failure line, if it failed."""

        def record(work: RunWork, result: FoldResult) -> str | None:
            if not is_primary():
                if result.failure:
                    failed = work.run_dir / "failed.json"
                    return failure_line(work.cfg, work.run_id, result.fold.index, result.failure, failed)
                return None
            return write_fold_result(work, result, self.fold_data, self.skipped, self.fingerprint)

        return record


def load_run_data(cfg: DictConfig, source: DataSource, fingerprint: str, progress: bool | None = None) -> RunData:
    """Decode (or reuse the cached array), drop what ``skip_corrupt`` leaves out, make the copies and the folds:
    the one way a run's images are made, for training and for what reads them after (Grad-CAM)."""
    task = task_for(cfg)
    prepared = prepare(cfg, source, progress=progress)
    samples = source.samples[prepared.keep].reset_index(drop=True)
    labels = samples["label"].to_numpy(dtype=np.int64)
    skipped_files = source.samples.loc[~prepared.keep, ["path"]].assign(reason="corrupt_images")
    skipped = {**source.skipped, **prepared.skipped}
    images, targets, cache_path = prepared.images, None, prepared.cache_path
    if task.targets is not None:  # a detector's face boxes; what was done where there was not one face
        targets, counts = task.targets(cfg, source, prepared.keep, labels)
        skipped.update(counts)
    if cfg.split.get("copies", 1) > 1:  # split=paper_copies: paper 000's offline copies, before its random split
        samples, images, labels, targets = expand_copies(samples, images, labels, targets, cfg.split.copies, cfg.seed)
        cache_path = None  # the copies are not the cached array: hash them afresh
    folds = run_folds(cfg, samples, labels, task.min_classes)
    return RunData(
        source, fingerprint, images, samples, labels, folds, skipped, skipped_files, task, targets, cache_path
    )


DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def _own_ddp_session() -> Iterator[None]:
    """Lightning leaves the env and process group of the DDP ranks it launched; the next run in this process
    (a sweep's next job) must launch its own ranks, not think they exist already."""
    before = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        yield
    finally:
        if before["LOCAL_RANK"] is None and "LOCAL_RANK" in os.environ:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def _train_run(cfg: DictConfig, run_id: str, run_dir: Path, data: RunData) -> rec.RunRecord:
    """Ask a trainer for every fold not yet recorded: packed where ``trainer.pack`` packs (or a killed pack left
    state), else one model at a time; each result is recorded as it comes."""
    primary = is_primary()
    if primary:
        _start_record(cfg, run_dir, data, data.folds)
    work = RunWork(cfg, run_id, run_dir, len(data.folds), [])
    work.pending = [fold for fold in data.folds if not rec.fold_is_complete(run_dir, fold.index)]
    record = data.recorder()
    packs = pack_limit(cfg, data.task.packs) > 1 and len(work.pending) > 1
    packs = packs or any(has_packed_state(work, f) for f in work.pending)
    if primary and packs:
        failures = train_packed([work], data.fold_data, record)
        if run_id in failures:
            raise RunFailed(failures[run_id])
        return rec.finish_run(run_dir, work.n_folds)
    for fold in work.pending:
        result = train_solo(work, fold, data.fold_data)
        if result is not None and (failure := record(work, result)):
            raise RunFailed(failure)
    if not primary:  # the record is rank 0's
        return rec.RunRecord(run_id, run_dir, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    return rec.finish_run(run_dir, work.n_folds)


def _start_record(cfg: DictConfig, run_dir: Path, data: RunData, folds: list[Fold]) -> None:
    """A run's folder once its data loaded: config, split, what was skipped; an old failure cleared."""
    (run_dir / "failed.json").unlink(missing_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    save_split(run_dir, data.samples, folds)
    write_run_leakage(run_dir, data.samples, folds, data, cfg)
    if len(data.skipped_files):
        write_csv(run_dir / "skipped.csv", data.skipped_files)


def seedless_key(cfg: DictConfig) -> str:
    """What runs that may share a pack have in common: the whole experiment but its seed."""
    identity = rec.experiment_identity(cfg)
    identity.pop("seed", None)
    return json.dumps(identity, sort_keys=True, default=str)


def run_many(cfgs: list[DictConfig]) -> list[rec.RunRecord | FerbenchError]:
    """Several runs; where ``trainer.pack`` packs, runs that differ only in seed train their folds together.

    Returns each run's record, or the error that ended it (RunBusy, RunFailed, ...): one failing run does not
    stop the others. Records are exactly those ``run`` would write one run at a time.
    """
    outcomes: list[rec.RunRecord | FerbenchError | None] = [None] * len(cfgs)
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = seedless_key(cfg) if _packs(cfg) else f"alone {i}"
        groups.setdefault(key, []).append(i)
    for indices in groups.values():
        if len(indices) == 1:
            outcomes[indices[0]] = _outcome(run, cfgs[indices[0]])
        else:
            for i, outcome in zip(indices, _run_seeds([cfgs[i] for i in indices]), strict=True):
                outcomes[i] = outcome
    return outcomes  # type: ignore[return-value]


def _packs(cfg: DictConfig) -> bool:
    try:
        return pack_limit(cfg, task_for(cfg).packs) > 1
    except FerbenchError:  # a bad config: its own run says so
        return False


def _outcome(fn, *args):
    try:
        return fn(*args)
    except FerbenchError as exc:
        return exc


def _run_seeds(cfgs: list[DictConfig]) -> list[rec.RunRecord | FerbenchError]:
    """Runs of one experiment at several seeds: data loaded once, every pending fold of every seed packed."""
    outcomes: list[rec.RunRecord | FerbenchError | None] = [None] * len(cfgs)
    try:
        validate(cfgs[0])
        source = load_source(cfgs[0])  # the seeds share their data: listed once, fingerprinted once
        fingerprint = data_fingerprint(source, data_root(cfgs[0]))
    except FerbenchError as exc:
        return [exc] * len(cfgs)
    with ExitStack() as locks:
        works: list[tuple[int, RunWork]] = []
        made: list[Path] = []  # run folders this call made: removed again if the shared data fails
        for i, cfg in enumerate(cfgs):
            try:
                validate(cfg)
                run_id = rec.run_id(cfg, fingerprint)
                run_dir = rec.run_dir(cfg.results_dir, run_id)
                if rec.is_complete(run_dir):
                    outcomes[i] = rec.RunRecord.load(run_dir)
                    continue
                configure_cpu(cfg.trainer)
                existed = run_dir.exists()
                ensure_writable(run_dir)
                locks.enter_context(rec.run_lock(run_dir))
            except FerbenchError as exc:
                outcomes[i] = exc
                continue
            if rec.is_complete(run_dir):
                outcomes[i] = rec.RunRecord.load(run_dir)
                continue
            set_aside_damaged_metrics(run_dir)
            works.append((i, RunWork(cfg, run_id, run_dir, 0, [])))
            if not existed:
                made.append(run_dir)
        if works:
            try:
                with disk_full_keeps_folds(works[0][1].run_dir.parent):
                    _train_seeds([w for _, w in works], source, fingerprint)
            except FerbenchError as exc:  # the data: every seed shares it
                for run_dir in made:
                    remove_half_made(run_dir)
                for i, _ in works:
                    outcomes[i] = exc
                return outcomes  # type: ignore[return-value]
            for i, work in works:
                failure = work.failure
                outcomes[i] = RunFailed(failure) if failure else rec.finish_run(work.run_dir, work.n_folds)
    return outcomes  # type: ignore[return-value]


def _train_seeds(works: list[RunWork], source: DataSource, fingerprint: str) -> None:
    data = load_run_data(works[0].cfg, source, fingerprint)
    check_model(works[0].cfg, len(data.classes))  # a config error fails here, before any run's record is written
    for work in works:
        folds = run_folds(work.cfg, data.samples, data.labels, data.task.min_classes)
        _start_record(work.cfg, work.run_dir, data, folds)
        work.n_folds = len(folds)
        work.pending = [f for f in folds if not rec.fold_is_complete(work.run_dir, f.index)]
    failures = train_packed(works, data.fold_data, data.recorder())
    for work in works:
        work.failure = failures.get(work.run_id)
