"""``run(cfg) -> RunRecord``: one experiment, every fold, recorded. What the CLI and tests call."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from ferbench.config import validate
from ferbench.data import DataSource
from ferbench.data.copies import expand_copies
from ferbench.data.identity import data_fingerprint, data_root, load_source
from ferbench.data.splits import Fold, carve_val, make_folds
from ferbench.data.transforms import build_augmentation
from ferbench.errors import ConfigError, FerbenchError, Interrupted, RunFailed
from ferbench.factory import (
    build_datamodule,
    build_model,
    build_module,
    build_net,
    prepare,
    seeded_model_and_loss,
)
from ferbench.models.profile import count_macs, inference_speed
from ferbench.results import record as rec
from ferbench.results.atomic import write_atomic, write_csv, write_text
from ferbench.results.integrity import set_aside_damaged_metrics
from ferbench.results.leakage import write_run_leakage
from ferbench.training.detection import detection_parts, detection_targets, is_detection
from ferbench.training.metrics import flatten
from ferbench.training.mixup import build_mixup
from ferbench.training.module import FERModule
from ferbench.training.packed import (
    PACKED_LAST,
    Member,
    MemberResult,
    PackedTrainer,
    PackNet,
    PackSettings,
    packable,
    packed_optimizer_gap,
    probe_stochastic,
    probe_vmap,
)
from ferbench.training.resume import make_resumable, read_last
from ferbench.training.trainer import build_trainer, configure_cpu

MIN_FREE_BYTES = 200 * 2**20
AUTO_PACK_MAX = 64
"""``trainer.pack=auto`` on an accelerator: up to this many models per pack."""
log = logging.getLogger("ferbench")


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def ensure_writable(run_dir: Path) -> None:
    """Fail before training, not after an hour, if the record cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / ".write_probe", "ok")
        (run_dir / ".write_probe").unlink()
    except OSError as exc:
        raise FerbenchError(f"results directory {run_dir} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise FerbenchError(f"results directory {run_dir} has only {free // 2**20} MiB free (need 200 MiB)")


def protocol_folds(folds: list[Fold], protocol: str) -> list[Fold]:
    """``select_on_test`` reproduces papers that chose checkpoints on test: validation *is* the test split."""
    if protocol != "select_on_test":
        return folds
    return [Fold(f.index, np.sort(np.concatenate([f.train, f.val])), f.test, f.test) for f in folds]


def subset_train(fold: Fold, labels: np.ndarray, fraction: float, seed: int) -> Fold:
    """Smoke runs train on a stratified, seeded fraction of the training part; val and test unchanged."""
    if fraction >= 1:
        return fold
    _, kept = carve_val(fold.train, labels, fraction, seed)
    return Fold(fold.index, kept, fold.val, fold.test)


def save_split(run_dir: Path, samples: pd.DataFrame, folds: list[Fold]) -> None:
    """Indices saved with the run, so any number traces back to the exact images."""
    write_atomic(run_dir / "samples.csv.gz", lambda tmp: samples.to_csv(tmp, index=False, compression="gzip"))
    arrays = {f"{part}_{f.index}": getattr(f, part) for f in folds for part in ("train", "val", "test")}
    write_atomic(run_dir / "folds.npz", lambda tmp: _savez(tmp, arrays))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


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
    run_dir = Path(cfg.results_dir) / "runs" / run_id
    if rec.is_complete(run_dir):
        return rec.RunRecord.load(run_dir)
    configure_cpu(cfg.trainer)
    data = load_run_data(cfg, source, fingerprint)  # data and model errors fail here, before the run's folder
    build_model(cfg, len(source.classes))
    if not is_primary():
        return _train_run(cfg, run_id, run_dir, data)
    ensure_writable(run_dir)
    with rec.run_lock(run_dir), _own_ddp_session():
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
    targets: list[np.ndarray] | None = None
    """A detector's face boxes with their labels, per image (``model.task=detection``); None to classify."""
    cache_path: Path | None = None
    """The preprocessed array's cache file (image hashes for leakage.json are kept beside it)."""

    @property
    def classes(self) -> list[str]:
        return list(self.source.classes)


def load_run_data(cfg: DictConfig, source: DataSource, fingerprint: str) -> RunData:
    """Decode (or reuse the cached array), drop what ``skip_corrupt`` leaves out, make the folds."""
    prepared = prepare(cfg, source)
    samples = source.samples[prepared.keep].reset_index(drop=True)
    labels = samples["label"].to_numpy(dtype=np.int64)
    skipped_files = source.samples.loc[~prepared.keep, ["path"]].assign(reason="corrupt_images")
    skipped = {**source.skipped, **prepared.skipped}
    images, targets, cache_path = prepared.images, None, prepared.cache_path
    if is_detection(cfg):  # face boxes (cached beside the images); what was done where there was no one face
        targets, box_counts = detection_targets(cfg, source, prepared.keep, labels)
        skipped.update(box_counts)
    if cfg.split.get("copies", 1) > 1:  # split=paper_copies: paper 000's offline copies, before its random split
        samples, images, labels, targets = expand_copies(samples, images, labels, targets, cfg.split.copies, cfg.seed)
        cache_path = None  # the copies are not the cached array: hash them afresh
    folds = run_folds(cfg, samples, labels)
    return RunData(source, fingerprint, images, samples, labels, folds, skipped, skipped_files, targets, cache_path)


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
    primary = is_primary()
    folds = data.folds
    if primary:
        _start_record(cfg, run_dir, data, folds)
    pending = [fold for fold in folds if not rec.fold_is_complete(run_dir, fold.index)]
    if primary and (pack_limit(cfg) > 1 and len(pending) > 1 or any(_has_packed_state(run_dir, f) for f in pending)):
        failures = train_packed([RunWork(cfg, run_id, run_dir, len(folds), pending)], data)
        if run_id in failures:
            raise RunFailed(failures[run_id])
        return rec.finish_run(run_dir, len(folds))
    rows = []
    for fold in pending:
        row = train_fold(
            cfg, run_id, run_dir, fold, data.images, data.labels, data.classes, data.skipped, len(folds),
            data_fingerprint=data.fingerprint, targets=data.targets,
        )  # fmt: skip
        rows.append(row)
    if not primary:  # the record is rank 0's; the others hand back what they trained, unwritten
        return rec.RunRecord(run_id, run_dir, pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame())
    return rec.finish_run(run_dir, len(folds))


def _start_record(cfg: DictConfig, run_dir: Path, data: RunData, folds: list[Fold]) -> None:
    """A run's folder once its data loaded: config, split, what was skipped; an old failure cleared."""
    (run_dir / "failed.json").unlink(missing_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    save_split(run_dir, data.samples, folds)
    write_run_leakage(run_dir, data.samples, folds, data, cfg)
    if len(data.skipped_files):
        write_csv(run_dir / "skipped.csv", data.skipped_files)


def run_folds(cfg: DictConfig, samples: pd.DataFrame, labels: np.ndarray) -> list[Fold]:
    """The split protocol's folds for this run's seed (and ``protocol``)."""
    split_params = {k: v for k, v in _plain(cfg.split).items() if k != "name"}
    return protocol_folds(make_folds(samples, cfg.split.name, cfg.seed, **split_params), cfg.protocol)


def _base_row(cfg: DictConfig, run_id: str, fold: Fold, n_folds: int) -> dict:
    row = {"run_id": run_id, **rec.axis_choices(cfg)}
    row.update(
        seed=cfg.seed,
        fold=fold.index,
        n_folds=n_folds,
        protocol=cfg.protocol,
        n_train=len(fold.train),
        n_val=len(fold.val),
        n_test=len(fold.test),
        input_size=cfg.model.input_size,
        in_chans=cfg.model.in_chans,
        max_epochs=cfg.trainer.max_epochs,
        batch_size=cfg.trainer.batch_size,
        lr=cfg.optim.lr,
    )
    return row


def train_fold(
    cfg: DictConfig,
    run_id: str,
    run_dir: Path,
    fold: Fold,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    skipped: dict[str, int],
    n_folds: int,
    data_fingerprint: str = "",
    pack_note: str = "",
    targets: list[np.ndarray] | None = None,
) -> dict:
    """Fit (resuming from ``last.ckpt`` if a killed run left one), test the best checkpoint, record (rank 0)."""
    fold = subset_train(fold, labels, cfg.trainer.limit_train_fraction, cfg.seed)
    num_classes = len(classes)
    model, loss = seeded_model_and_loss(cfg, num_classes, labels[fold.train])
    macs = count_macs(model, cfg.model.input_size, cfg.model.in_chans)  # on the fresh model: one eval forward
    if targets is not None:  # a detector (model.task=detection): boxes as targets, its own module and data
        pin = cfg.trainer.pin_memory
        pin_memory = torch.cuda.is_available() if pin == "auto" else bool(pin)
        module, datamodule = detection_parts(cfg, model, fold, images, targets, num_classes, pin_memory)
    else:
        module = build_module(cfg, model, loss, num_classes)
        datamodule = build_datamodule(cfg, images, labels, fold)
    checkpoint_dir = rec.fold_dir(run_dir, fold.index) / "checkpoints"
    has_val = len(fold.val) > 0
    last = checkpoint_dir / "last.ckpt"
    trainer = make_resumable(build_trainer(cfg, checkpoint_dir, has_val=has_val), last, cfg.seed, fold.index)
    state = read_last(last)  # None when absent; one that cannot be read is set aside and the fold starts again
    resumed = state is not None
    if resumed:
        log.info(
            "resumed fold %d from epoch %d of %d (%s)", fold.index, state["epoch"] + 2, cfg.trainer.max_epochs, last
        )
    started = time.perf_counter()
    try:
        if resumed and _stopped_early(state):  # killed between early stopping and the fold's record
            module.history = list(state["ferbench_history"])
        else:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumed else None)
    except RunFailed as exc:
        failed = run_dir / "failed.json"
        if is_primary():
            rec.write_failure(run_dir, str(exc), fold.index, len(module.history) + 1)
        raise RunFailed(failure_line(cfg, run_id, fold.index, str(exc), failed)) from None
    except (SystemExit, Interrupted) as exc:  # ours, or Lightning's way out on SIGTERM and Ctrl-C
        where = f"epoch {len(module.history) + 1} of {cfg.trainer.max_epochs}, fold {fold.index} of run {run_id}"
        raise _interrupted(exc, trainer, where) from None
    fit_seconds = time.perf_counter() - started
    history = pd.DataFrame(module.history).assign(fold=fold.index)
    train_seconds = float(history["epoch_seconds"].sum()) if "epoch_seconds" in history else fit_seconds
    best = checkpoint_dir / "best.ckpt"
    world_size = trainer.world_size
    if world_size > 1:
        if not is_primary():
            return {}
        trainer = _solo_tester(cfg, module, checkpoint_dir, has_val)
    started = time.perf_counter()
    trainer.test(module, datamodule=datamodule, ckpt_path=str(best) if best.exists() else None, verbose=False)
    test_seconds = time.perf_counter() - started
    # the best checkpoint's weights, batch 1, on the run's device, warm-up excluded (not the test call's wall time)
    speed = inference_speed(module.model, cfg.model.input_size, cfg.model.in_chans, trainer.strategy.root_device)

    row = _fold_row(
        cfg,
        run_id,
        fold,
        n_folds,
        module.test_row(classes) if targets is not None else flatten(module.test_results, classes),
        history,
        classes,
        skipped,
        resumed=resumed,
        processes=world_size,
        params=sum(p.numel() for p in model.parameters()),
        macs=macs,
        train_seconds=train_seconds,
        fit_seconds=fit_seconds,
        test_seconds=test_seconds,
        speed=speed,
        data_fingerprint=data_fingerprint,
        pack_note=pack_note,
    )
    _record_fold(run_dir, fold.index, row, history, module.test_results, classes)
    last.unlink(missing_ok=True)  # only once the fold is recorded: a kill before this resumes from it
    return row


def _fold_row(
    cfg: DictConfig,
    run_id: str,
    fold: Fold,
    n_folds: int,
    test_metrics: dict[str, float],
    history: pd.DataFrame,
    classes: list[str],
    skipped: dict[str, int],
    *,
    resumed: bool,
    processes: int,
    params: int,
    macs: int,
    train_seconds: float,
    fit_seconds: float,
    test_seconds: float,
    speed: dict,
    data_fingerprint: str = "",
    packed: int = 1,
    pack_note: str = "",
) -> dict:
    """A fold's row of ``metrics.csv``: the same columns whether its model trained alone or in a pack."""
    epochs_run = len(history)
    row = _base_row(cfg, run_id, fold, n_folds)
    row["data_fingerprint"] = data_fingerprint
    row.update(test_metrics)
    row.update(
        status="completed",
        epochs_run=epochs_run,
        best_epoch=_best_epoch(history),
        stopped_early=epochs_run < cfg.trainer.max_epochs,
        resumed=resumed,
        processes=processes,  # training processes (DDP ranks); batch_size is per process
        packed=packed,  # models trained together as one stacked model (1: alone)
        pack_note=pack_note,  # why a model that could have been packed was not
        params=params,
        macs=macs,
        train_seconds=round(train_seconds, 2),
        fit_seconds_this_process=round(fit_seconds, 2),
        test_seconds=round(test_seconds, 2),
        train_images_per_s=round(len(fold.train) * epochs_run / max(train_seconds, 1e-9), 1),
        test_images_per_s=round(len(fold.test) / max(test_seconds, 1e-9), 1),
        **speed,
        classes=json.dumps(classes),
        skipped=json.dumps(skipped),
        tag=cfg.get("tag", ""),
        **rec.provenance(),
    )
    return row


def _record_fold(
    run_dir: Path, fold: int, row: dict, history: pd.DataFrame, test_results: dict, classes: list[str]
) -> None:
    confusion = pd.DataFrame(test_results["confusion"].numpy(), columns=classes)
    confusion.insert(0, "true", classes)
    confusion.insert(0, "fold", fold)
    rec.write_fold(run_dir, fold, row, history, confusion)


def failure_line(cfg: DictConfig, run_id: str, fold: int, reason: str, failed: Path) -> str:
    """What a user reads when a run's loss went NaN: where, the record, and what to try."""
    return (
        f"run {run_id}, fold {fold}: {reason}; recorded in {failed}; try a lower optim.lr (now {cfg.optim.lr}) "
        "or loss/optimiser settings, then run the same command again"
    )


def _interrupted(exc: BaseException, trainer: pl.Trainer, where: str) -> BaseException:
    """The signal that ended a fit, said with where it stopped; any other SystemExit as it was."""
    if isinstance(exc, Interrupted):
        return Interrupted(exc.signum, where)
    if trainer.received_sigterm:  # Lightning's SIGTERMException (exit code None: "success")
        return Interrupted(signal.SIGTERM, where)
    if trainer.interrupted:  # Lightning turned Ctrl-C into sys.exit(1)
        return Interrupted(signal.SIGINT, where)
    return exc


def _stopped_early(checkpoint: dict) -> bool:
    """Did the checkpoint's EarlyStopping already stop? Fitting from it again would train one epoch too many."""
    states = checkpoint.get("callbacks", {})
    return any(k.startswith("EarlyStopping") and v.get("stopped_epoch", 0) > 0 for k, v in states.items())


def _solo_tester(cfg: DictConfig, module: FERModule, checkpoint_dir: Path, has_val: bool) -> pl.Trainer:
    """Under DDP, rank 0 tests alone on one device: a DistributedSampler would pad the test split with repeats.

    The test metrics must then not wait for the other ranks to sync (they have moved on).
    """
    single = OmegaConf.merge(cfg, {"trainer": {"devices": 1, "strategy": "auto", "progress_bar": False}})
    for metric in module.test_metrics.values():
        metric.distributed_available_fn = lambda: False
    return build_trainer(single, checkpoint_dir, has_val=has_val)


def _best_epoch(history: pd.DataFrame) -> int:
    if "val_loss" not in history or history["val_loss"].isna().all():
        return int(history["epoch"].max())
    return int(history.loc[history["val_loss"].idxmin(), "epoch"])


# ------------------------------------------------------------------------------------------- packed training


@dataclass
class RunWork:
    """A run's folds still to train."""

    cfg: DictConfig
    run_id: str
    run_dir: Path
    n_folds: int
    pending: list[Fold]
    failure: str | None = None


def training_device(cfg: DictConfig) -> torch.device:
    """The device a run trains on, as Lightning's ``accelerator`` choice resolves it."""
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pack_limit(cfg: DictConfig) -> int:
    """``trainer.pack``: the most models one pack may hold (1 = each model alone).

    ``auto`` packs on an accelerator; on a CPU, compute-bound for these convolutions, it does not (the
    benchmark's ``pack_speedup`` there is about 1). Several processes (DDP) never pack.
    """
    value = cfg.trainer.get("pack", "auto")
    if value in ("off", False, None):
        return 1
    if isinstance(value, bool) or not (value == "auto" or (isinstance(value, int) and value >= 1)):
        raise ConfigError(f"trainer.pack must be 'auto', 'off' or an integer >= 1, got {value!r}")
    if int(cfg.trainer.get("devices", 1) or 1) > 1 or "ddp" in str(cfg.trainer.get("strategy", "auto")):
        return 1
    if is_detection(cfg) or cfg.split.get("copies", 1) > 1:  # a detector's loss; seeded copies: data per seed
        return 1
    if value == "auto":
        return AUTO_PACK_MAX if training_device(cfg).type != "cpu" else 1
    return int(value)


def _has_packed_state(run_dir: Path, fold: Fold) -> bool:
    """A fold a killed pack left half-trained resumes in a pack (of one, if need be), whatever ``trainer.pack``."""
    return (rec.fold_dir(run_dir, fold.index) / "checkpoints" / PACKED_LAST).is_file()


@dataclass
class _Job:
    work: RunWork
    fold: Fold  # as the split made it (the member's may be a smoke subset)
    member: Member


def _jobs(works: list[RunWork], data: RunData) -> list[_Job]:
    jobs = []
    for work in works:
        cfg = work.cfg
        for fold in work.pending:
            trained = subset_train(fold, data.labels, cfg.trainer.limit_train_fraction, cfg.seed)
            net = build_net(cfg, len(data.classes), data.labels[trained.train])  # the solo run's initial weights
            checkpoints = rec.fold_dir(work.run_dir, fold.index) / "checkpoints"
            member = Member(f"{work.run_id} fold {fold.index}", cfg.seed, trained, net, None, checkpoints)
            member.augment = build_augmentation(cfg.aug.train)
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
        num_classes=num_classes,
        device=training_device(cfg),
        precision=str(t.precision),
        gradient_clip_val=t.get("gradient_clip_val"),
        gpu_augment=bool(t.get("gpu_augment", False)),
        progress=_say if t.progress_bar else None,
    )


def train_packed(works: list[RunWork], data: RunData) -> dict[str, str]:
    """Train every pending fold of ``works`` (runs that differ at most in seed) in packs; record each fold as
    its solo run would. Returns the failures by run id (a NaN fails its own run only)."""
    cfg = works[0].cfg
    limit = pack_limit(cfg)
    jobs = _jobs(works, data)
    fits = {id(m) for m in packable([j.member for j in jobs], int(cfg.trainer.batch_size))[0]}
    # a fold a killed pack left half-trained resumes in a pack even where this command would not pack
    pack_jobs = [j for j in jobs if id(j.member) in fits and (limit > 1 or _has_job_state(j))]
    solo_jobs = [j for j in jobs if j not in pack_jobs]
    note = ""
    if len(pack_jobs) > 1 and (why := _unpackable(cfg, pack_jobs[0].member.net)):
        note = f"not packed: {why}"
        _say(f"{cfg.model.name}+{cfg.attn.name}: trains one model at a time ({note})")
        solo_jobs, pack_jobs = jobs, []
    failures: dict[str, str] = {}
    for start in range(0, len(pack_jobs), limit):
        failures.update(_train_pack(pack_jobs[start : start + limit], data))
    for job in solo_jobs:
        work = job.work
        if work.run_id in failures:
            continue
        try:
            train_fold(
                work.cfg, work.run_id, work.run_dir, job.fold, data.images, data.labels, data.classes,
                data.skipped, work.n_folds, data_fingerprint=data.fingerprint, pack_note=note,
            )  # fmt: skip
        except RunFailed as exc:
            failures[work.run_id] = str(exc)
    return failures


def _has_job_state(job: _Job) -> bool:
    return _has_packed_state(job.work.run_dir, job.fold)


def _unpackable(cfg: DictConfig, net: PackNet) -> str | None:
    """Why this model cannot train in a pack (vmap cannot batch one of its ops, an unsupported option), or None."""
    if build_mixup(cfg.aug.get("mixup")) is not None:
        return "aug.mixup mixes batches in the Lightning training step, which packs do not run"
    if why := packed_optimizer_gap(cfg.optim):
        return why
    if str(cfg.trainer.precision) not in ("32-true", "32", "bf16-mixed"):
        return f"trainer.precision={cfg.trainer.precision} (packs train in 32-true or bf16-mixed)"
    if bool(cfg.trainer.get("gpu_augment", False)) and cfg.aug.get("train"):
        return "trainer.gpu_augment draws the augmentation from one stream shared by the pack, not each run's own"
    size, chans = int(cfg.model.input_size), int(cfg.model.in_chans)
    return probe_stochastic(net, size, chans) or probe_vmap(net, size, chans)


def _train_pack(jobs: list[_Job], data: RunData) -> dict[str, str]:
    cfg = jobs[0].work.cfg
    members = [j.member for j in jobs]
    params = sum(p.numel() for p in members[0].net.model.parameters())
    macs = count_macs(members[0].net.model, cfg.model.input_size, cfg.model.in_chans)
    if cfg.trainer.progress_bar:
        _say(f"packing {len(members)} models of {cfg.model.name}+{cfg.attn.name} (folds x seeds) into one")
    started = time.perf_counter()
    trainer = PackedTrainer(members, data.images, data.labels, pack_settings(cfg, len(data.classes)))
    try:
        results = trainer.train()
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        where = f"epoch {max(trainer.epoch) + 1} of {cfg.trainer.max_epochs} of a pack of {len(jobs)} models"
        raise Interrupted(signum, f"{where} ({jobs[0].member.name}, ...)") from None
    except torch.OutOfMemoryError:
        if len(jobs) == 1:
            raise
        half = len(jobs) // 2  # each half resumes from whatever state the whole pack had saved
        _say(f"a pack of {len(jobs)} models ran out of device memory: training it as {half} + {len(jobs) - half}")
        torch.cuda.empty_cache()
        return {**_train_pack(jobs[:half], data), **_train_pack(jobs[half:], data)}
    fit_seconds = time.perf_counter() - started
    speed = _pack_inference_speed(trainer, cfg)
    failures = {}
    for job, result in zip(jobs, results, strict=True):
        work = job.work
        if result.failure:
            rec.write_failure(work.run_dir, result.failure, job.fold.index, result.failed_epoch)
            failed = work.run_dir / "failed.json"
            failures[work.run_id] = failure_line(work.cfg, work.run_id, job.fold.index, result.failure, failed)
            continue
        _record_member(job, result, data, len(members), params, macs, fit_seconds, speed)
    return failures


def _pack_inference_speed(trainer: PackedTrainer, cfg: DictConfig) -> dict:
    """The ``fps_*`` columns, timed once per pack on its first model with its best weights, alone at batch 1
    (the pack's models share the architecture, and so the speed)."""
    net = trainer.members[0].net
    net.load_state_dict(trainer.best_state(0))
    return inference_speed(net.model, cfg.model.input_size, cfg.model.in_chans, trainer.s.device)


def _record_member(
    job: _Job,
    result: MemberResult,
    data: RunData,
    k: int,
    params: int,
    macs: int,
    fit_seconds: float,
    speed: dict,
) -> None:
    work, fold = job.work, job.member.fold
    history = pd.DataFrame(result.history).assign(fold=fold.index)
    row = _fold_row(
        work.cfg,
        work.run_id,
        fold,
        work.n_folds,
        flatten(result.test_results, data.classes),
        history,
        data.classes,
        data.skipped,
        resumed=result.resumed,
        processes=1,
        params=params,
        macs=macs,
        train_seconds=float(history["epoch_seconds"].sum()) if len(history) else 0.0,
        fit_seconds=fit_seconds,
        test_seconds=result.test_seconds,
        speed=speed,
        data_fingerprint=data.fingerprint,
        packed=k,
    )
    _record_fold(work.run_dir, fold.index, row, history, result.test_results, data.classes)
    (job.member.checkpoint_dir / PACKED_LAST).unlink(missing_ok=True)


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
        key = seedless_key(cfg) if pack_limit(cfg) > 1 else f"alone {i}"
        groups.setdefault(key, []).append(i)
    for indices in groups.values():
        if len(indices) == 1:
            outcomes[indices[0]] = _outcome(run, cfgs[indices[0]])
        else:
            for i, outcome in zip(indices, _run_seeds([cfgs[i] for i in indices]), strict=True):
                outcomes[i] = outcome
    return outcomes  # type: ignore[return-value]


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
        for i, cfg in enumerate(cfgs):
            try:
                validate(cfg)
                run_id = rec.run_id(cfg, fingerprint)
                run_dir = Path(cfg.results_dir) / "runs" / run_id
                if rec.is_complete(run_dir):
                    outcomes[i] = rec.RunRecord.load(run_dir)
                    continue
                configure_cpu(cfg.trainer)
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
        if works:
            try:
                _train_seeds([w for _, w in works], source, fingerprint)
            except FerbenchError as exc:  # the data: every seed shares it
                for i, _ in works:
                    outcomes[i] = exc
                return outcomes  # type: ignore[return-value]
            for i, work in works:
                failure = work.failure
                outcomes[i] = RunFailed(failure) if failure else rec.finish_run(work.run_dir, work.n_folds)
    return outcomes  # type: ignore[return-value]


def _train_seeds(works: list[RunWork], source: DataSource, fingerprint: str) -> None:
    data = load_run_data(works[0].cfg, source, fingerprint)
    build_model(works[0].cfg, len(data.classes))  # a config error fails here, before any run's folder is written
    for work in works:
        folds = run_folds(work.cfg, data.samples, data.labels)
        _start_record(work.cfg, work.run_dir, data, folds)
        work.n_folds = len(folds)
        work.pending = [f for f in folds if not rec.fold_is_complete(work.run_dir, f.index)]
    failures = train_packed(works, data)
    for work in works:
        work.failure = failures.get(work.run_id)
