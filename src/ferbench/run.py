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
from ferbench.records.run_folder import disk_full_keeps_folds, ensure_writable, half_made_removed
from ferbench.training.fold import FoldData, FoldResult, RunWork, Task, failure_line, write_fold_result
from ferbench.training.lightning.loop import train_solo
from ferbench.training.packed.loop import Recorder, has_packed_state, pack_limit, train_packed
from ferbench.training.process import configure_cpu
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
    """Train and test every fold of one experiment; reuse a complete record, resume a partial one: ``run_many`` of
    one run, its error raised.

    A run being trained by another process (its ``.lock`` held) raises RunBusy: never trained twice at once.
    """
    (outcome,) = run_many([cfg])
    if isinstance(outcome, FerbenchError):
        raise outcome
    return outcome


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


def _train(works: list[RunWork], data: RunData) -> None:
    """Ask a trainer for every fold of ``works`` not yet recorded, each result recorded as it comes (a failure in
    ``work.failure``): packed where ``trainer.pack`` packs several (or a killed pack left state), else one model at a
    time. Off rank 0 (DDP) the folds are trained and rank 0 records."""
    primary = is_primary()
    for work in works:
        folds = run_folds(work.cfg, data.samples, data.labels, data.task.min_classes)
        if primary:
            _start_record(work.cfg, work.run_dir, data, folds)
        work.n_folds = len(folds)
        work.pending = [f for f in folds if not rec.fold_is_complete(work.run_dir, f.index)]
    record = data.recorder()
    pending = [(work, fold) for work in works for fold in work.pending]
    packs = pack_limit(works[0].cfg, data.task.packs) > 1 and len(pending) > 1
    if primary and (packs or any(has_packed_state(work, fold) for work, fold in pending)):
        failures = train_packed(works, data.fold_data, record)
        for work in works:
            work.failure = failures.get(work.run_id)
        return
    for work, fold in pending:
        result = None if work.failure else train_solo(work, fold, data.fold_data)
        if result is not None:
            work.failure = record(work, result)


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
        for i, outcome in zip(indices, _run_group([cfgs[i] for i in indices]), strict=True):
            outcomes[i] = outcome
    return outcomes  # type: ignore[return-value]


def _packs(cfg: DictConfig) -> bool:
    try:
        return pack_limit(cfg, task_for(cfg).packs) > 1
    except FerbenchError:  # a bad config: its own run says so
        return False


def _run_group(cfgs: list[DictConfig]) -> list[rec.RunRecord | FerbenchError]:
    """Runs of one experiment at one seed or several: validated, their data listed, fingerprinted, loaded and
    checked once, before any folder; then each run's folder made, locked, checked again and trained."""
    outcomes: list[rec.RunRecord | FerbenchError | None] = [None] * len(cfgs)
    try:
        validate(cfgs[0])
        source = load_source(cfgs[0])  # the seeds share their data: listed once, fingerprinted once
        fingerprint = data_fingerprint(source, data_root(cfgs[0]))
    except FerbenchError as exc:
        return [exc] * len(cfgs)
    todo: list[tuple[int, RunWork]] = []
    for i, cfg in enumerate(cfgs):
        try:
            validate(cfg)
            run_id = rec.run_id(cfg, fingerprint)
        except FerbenchError as exc:
            outcomes[i] = exc
            continue
        run_dir = rec.run_dir(cfg.results_dir, run_id)
        if rec.is_complete(run_dir):
            outcomes[i] = rec.RunRecord.load(run_dir)
        else:
            todo.append((i, RunWork(cfg, run_id, run_dir, 0, [])))
    if not todo:
        return outcomes  # type: ignore[return-value]
    first = todo[0][1].cfg
    try:
        configure_cpu(first.trainer)
        data = load_run_data(first, source, fingerprint)  # data, model and split errors fail here, before a folder
        check_model(first, len(data.classes))
        pack_limit(first, data.task.packs)  # and a wrong trainer.pack
    except FerbenchError as exc:
        for i, _ in todo:
            outcomes[i] = exc
        return outcomes  # type: ignore[return-value]
    for i, outcome in _train_held(todo, data):
        outcomes[i] = outcome
    return outcomes  # type: ignore[return-value]


def _train_held(todo: list[tuple[int, RunWork]], data: RunData) -> list[tuple[int, rec.RunRecord | FerbenchError]]:
    """Each run claimed (``_hold``) and trained, or left to whoever holds it; what every run shares (the data, the
    disk) fails them all."""
    outcomes: dict[int, rec.RunRecord | FerbenchError] = {}
    works: list[tuple[int, RunWork]] = []
    try:
        with ExitStack() as held:
            held.enter_context(_own_ddp_session())
            for i, work in todo:
                try:
                    finished = _hold(held, work)
                except FerbenchError as exc:
                    outcomes[i] = exc
                    continue
                if finished is not None:
                    outcomes[i] = finished
                else:
                    works.append((i, work))
            if works:
                where = works[0][1].run_dir if len(works) == 1 else works[0][1].run_dir.parent
                with disk_full_keeps_folds(where):
                    _train([w for _, w in works], data)
            for i, work in works:
                outcomes[i] = _finished(work)
    except FerbenchError as exc:
        for i, _ in works:
            outcomes.setdefault(i, exc)
    return list(outcomes.items())


def _hold(held: ExitStack, work: RunWork) -> rec.RunRecord | None:
    """Rank 0's claim on a run's folder, kept until ``held`` closes: writable, locked (RunBusy where another process
    holds it), removed again after an error if this attempt made it and no fold began, damaged metrics set aside.
    Returns the record another process finished between our first look and the lock. Other DDP ranks only train."""
    if not is_primary():
        return None
    existed = work.run_dir.exists()
    ensure_writable(work.run_dir)
    held.enter_context(rec.run_lock(work.run_dir))
    held.enter_context(half_made_removed(work.run_dir, existed))
    if rec.is_complete(work.run_dir):
        return rec.RunRecord.load(work.run_dir)
    set_aside_damaged_metrics(work.run_dir)
    return None


def _finished(work: RunWork) -> rec.RunRecord | FerbenchError:
    if work.failure:
        return RunFailed(work.failure)
    if not is_primary():  # the record is rank 0's
        return rec.RunRecord(work.run_id, work.run_dir, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    return rec.finish_run(work.run_dir, work.n_folds)
