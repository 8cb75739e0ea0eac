"""Which folds train as one pack, and training them: the runner hands ``RunWork`` over, gets ``FoldResult``s back.

A pack holds folds (and seeds) of one experiment; anything that would make a packed model differ from its solo
run (an op vmap cannot batch, a random training step, an optimiser or trainer key the packed loop does not apply
(``packed/keys.py``), mix-up) sends the whole group to ``train_solo`` one model at a time, and each record's
``pack_note`` says why.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from omegaconf import DictConfig

from ferbench.data.splits import Fold, subset_train
from ferbench.errors import ConfigError, Interrupted
from ferbench.models.profile import count_macs, inference_speed
from ferbench.training.fold import FoldData, FoldResult, RunWork
from ferbench.training.lightning.loop import train_solo
from ferbench.training.loggers import build_logger, close_logger
from ferbench.training.metrics import flatten
from ferbench.training.packed.member import Member, MemberResult, PackSettings, packable
from ferbench.training.packed.probes import unpackable
from ferbench.training.packed.trainer import PACKED_LAST, PackedTrainer
from ferbench.training.process import apply_numerics, training_device

AUTO_PACK_MAX = 64
"""``trainer.pack=auto`` on an accelerator: up to this many models per pack."""


Recorder = Callable[[RunWork, FoldResult], "str | None"]
"""Writes a fold's record from its result; returns the failure line when the fold diverged."""


def pack_limit(cfg: DictConfig, task_packs: bool = True) -> int:
    """``trainer.pack``: the most models one pack may hold (1 = each model alone).

    ``auto`` packs on an accelerator; on a CPU, compute-bound for these convolutions, it does not (the
    benchmark's ``pack_speedup`` there is about 1). Several processes (DDP) never pack, nor a task without a pack
    unit (``task_packs``: ``Task.packs``, False for a detector's loss).
    """
    value = cfg.trainer.get("pack", "auto")
    if value in ("off", False, None):
        return 1
    if isinstance(value, bool) or not (value == "auto" or (isinstance(value, int) and value >= 1)):
        raise ConfigError(f"trainer.pack must be 'auto', 'off' or an integer >= 1, got {value!r}")
    if int(cfg.trainer.get("devices", 1) or 1) > 1 or "ddp" in str(cfg.trainer.get("strategy", "auto")):
        return 1
    if not task_packs or cfg.split.get("copies", 1) > 1:  # seeded copies: the data differs per seed
        return 1
    if value == "auto":
        return AUTO_PACK_MAX if training_device(cfg).type != "cpu" else 1
    return int(value)


def has_packed_state(work: RunWork, fold: Fold) -> bool:
    """A fold a killed pack left half-trained resumes in a pack (of one, if need be), whatever ``trainer.pack``."""
    return (work.checkpoint_dir(fold) / PACKED_LAST).is_file()


@dataclass
class _Job:
    work: RunWork
    fold: Fold  # as the split made it (the member's may be a smoke subset)
    member: Member


def _jobs(works: list[RunWork], data: FoldData) -> list[_Job]:
    jobs = []
    for work in works:
        cfg = work.cfg
        for fold in work.pending:
            trained = subset_train(fold, data.labels, cfg.trainer.limit_train_fraction, cfg.seed)
            # the solo run's initial weights, and its own augmentation
            net, augment = data.task.pack_member(cfg, len(data.classes), data.labels[trained.train])
            checkpoints = work.checkpoint_dir(fold)
            member = Member(work.name(fold), cfg.seed, trained, net, augment, checkpoints)
            jobs.append(_Job(work, fold, member))
    return jobs


def _say(line: str) -> None:
    print(line, flush=True)


def pack_settings(cfg: DictConfig, num_classes: int) -> PackSettings:
    t = cfg.trainer
    return PackSettings(
        optim=cfg.optim,
        max_epochs=int(t.max_epochs),
        batch_size=int(t.batch_size),
        patience=int(t.early_stopping_patience),
        min_delta=float(t.early_stopping_min_delta),
        num_classes=num_classes,
        device=training_device(cfg),
        precision=str(t.precision),
        gradient_clip_val=t.get("gradient_clip_val"),
        gpu_augment=bool(t.get("gpu_augment", False)),
        progress=_say if t.progress_bar else None,
    )


def train_packed(works: list[RunWork], data: FoldData, record: Recorder) -> dict[str, str]:
    """Train every pending fold of ``works`` (runs that differ at most in seed) in packs, ``record`` each fold's
    result as it comes. Returns the failures by run id (a NaN fails its own run only)."""
    cfg = works[0].cfg
    assert data.task.packs, f"train_packed was handed a {data.task.name} run, which never packs"
    apply_numerics(cfg.trainer)  # as build_trainer does: the vmap probe and the pack run under the run's settings
    limit = pack_limit(cfg, data.task.packs)
    jobs = _jobs(works, data)
    fits = {id(m) for m in packable([j.member for j in jobs], int(cfg.trainer.batch_size))[0]}
    # a fold a killed pack left half-trained resumes in a pack even where this command would not pack
    pack_jobs = [j for j in jobs if id(j.member) in fits and (limit > 1 or has_packed_state(j.work, j.fold))]
    solo_jobs = [j for j in jobs if j not in pack_jobs]
    note = ""
    if len(pack_jobs) > 1 and (why := unpackable(cfg, pack_jobs[0].member.net)):
        note = f"not packed: {why}"
        _say(f"{cfg.model.name}+{cfg.attn.name}: trains one model at a time ({note})")
        solo_jobs, pack_jobs = jobs, []
    failures: dict[str, str] = {}
    for start in range(0, len(pack_jobs), limit):
        failures.update(_train_pack(pack_jobs[start : start + limit], data, record))
    for job in solo_jobs:
        if job.work.run_id in failures:
            continue
        result = train_solo(job.work, job.fold, data, pack_note=note)
        if result is not None and (failure := record(job.work, result)):
            failures[job.work.run_id] = failure
    return failures


def _train_pack(jobs: list[_Job], data: FoldData, record: Recorder) -> dict[str, str]:
    cfg = jobs[0].work.cfg
    members = [j.member for j in jobs]
    params = sum(p.numel() for p in members[0].net.model.parameters())
    macs = count_macs(members[0].net.model, cfg.model.input_size, cfg.model.in_chans)
    if cfg.trainer.progress_bar:
        _say(f"packing {len(members)} models of {cfg.model.name}+{cfg.attn.name} (folds x seeds) into one")
    for job in jobs:  # here, not in _jobs: a fold that goes solo gets its logger run from train_solo alone
        if job.member.logger is None:  # a half of a pack that ran out of memory keeps the run it had
            work, fold = job.work, job.fold
            job.member.logger = build_logger(work.cfg, work.run_id, fold.index, work.checkpoint_dir(fold).parent)
    started = time.perf_counter()
    trainer = PackedTrainer(members, data.images, data.labels, pack_settings(cfg, len(data.classes)))
    try:
        results = trainer.train()
    except (Interrupted, KeyboardInterrupt) as exc:
        for member in members:
            close_logger(member.logger, "failed")
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        where = f"epoch {max(trainer.epoch) + 1} of {cfg.trainer.max_epochs} of a pack of {len(jobs)} models"
        raise Interrupted(signum, f"{where} ({jobs[0].member.name}, ...)") from None
    except torch.OutOfMemoryError:
        if len(jobs) == 1:
            raise
        half = len(jobs) // 2  # each half resumes from whatever state the whole pack had saved
        _say(f"a pack of {len(jobs)} models ran out of device memory: training it as {half} + {len(jobs) - half}")
        torch.cuda.empty_cache()
        return {**_train_pack(jobs[:half], data, record), **_train_pack(jobs[half:], data, record)}
    fit_seconds = time.perf_counter() - started
    speed = _pack_inference_speed(trainer, cfg)
    failures = {}
    for job, member_result in zip(jobs, results, strict=True):
        result = _fold_result(job, member_result, data, len(members), params, macs, fit_seconds, speed)
        close_logger(job.member.logger, "failed" if result.failure else "success")
        if failure := record(job.work, result):
            failures[job.work.run_id] = failure
    return failures


def _pack_inference_speed(trainer: PackedTrainer, cfg: DictConfig) -> dict:
    """The ``fps_*`` columns, timed once per pack on its first model with its best weights, alone at batch 1
    (the pack's models share the architecture, and so the speed)."""
    net = trainer.members[0].net
    net.load_state_dict(trainer.best_state(0))
    return inference_speed(net.model, cfg.model.input_size, cfg.model.in_chans, trainer.s.device)


def _fold_result(
    job: _Job, result: MemberResult, data: FoldData, k: int, params: int, macs: int, fit_seconds: float, speed: dict
) -> FoldResult:
    """A pack member's result in the form every trainer returns."""
    fold = job.member.fold
    history = pd.DataFrame(result.history).assign(fold=fold.index)
    if result.failure:
        return FoldResult(fold, history, failure=result.failure, failed_epoch=result.failed_epoch)
    return FoldResult(
        fold,
        history,
        best_epoch=result.best_epoch,
        test_metrics=flatten(result.test_results, data.classes),
        confusion=result.test_results["confusion"],
        resumed=result.resumed,
        packed=k,
        params=params,
        macs=macs,
        train_seconds=float(history["epoch_seconds"].sum()) if len(history) else 0.0,
        fit_seconds=fit_seconds,
        test_seconds=result.test_seconds,
        speed=speed,
        resume_file=job.member.checkpoint_dir / PACKED_LAST,
    )
