"""``run(cfg) -> RunRecord``: one experiment, every fold, recorded. What the CLI and tests call."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from ferbench.attention import attention_factory
from ferbench.config import validate
from ferbench.data import DATASETS, DataSource
from ferbench.data.base import select_classes
from ferbench.data.datamodule import FERDataModule
from ferbench.data.preprocess import prepare_images
from ferbench.data.splits import Fold, carve_val, make_folds
from ferbench.data.transforms import build_augmentation
from ferbench.errors import ConfigError, FerbenchError, RunFailed
from ferbench.models import create_model
from ferbench.models.heads import HEADS
from ferbench.models.profile import count_macs, inference_speed
from ferbench.results import record as rec
from ferbench.results.atomic import write_atomic, write_text
from ferbench.training.losses import build_loss
from ferbench.training.metrics import flatten
from ferbench.training.mixup import build_mixup
from ferbench.training.module import FERModule
from ferbench.training.resume import make_resumable
from ferbench.training.trainer import build_trainer, configure_cpu

MODEL_RESERVED_KEYS = ("name", "input_size", "in_chans")
MIN_FREE_BYTES = 200 * 2**20


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    """Model + its attention block + the head its loss needs, composed from three config groups."""
    switches = {k: v for k, v in _plain(cfg.model).items() if k not in MODEL_RESERVED_KEYS}
    attn_options = {k: v for k, v in _plain(cfg.attn).items() if k != "name"}
    try:
        return create_model(
            cfg.model.name,
            num_classes=num_classes,
            in_chans=cfg.model.in_chans,
            attn_layer=attention_factory(cfg.attn.name, **attn_options),
            head_layer=HEADS.get(cfg.loss.head),
            **switches,
        )
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None


def load_source(cfg: DictConfig) -> DataSource:
    try:
        loader = DATASETS.get(cfg.data.name)
    except KeyError as exc:
        raise ConfigError(f"data.name: {exc.args[0]}") from None
    root = Path(cfg.data.root) if cfg.data.get("root") else None
    source = loader(root=root, **_plain(cfg.data.get("options") or {}))
    return select_classes(source, list(cfg.data.get("drop_classes") or []))


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
    run_id = rec.run_id(cfg)
    run_dir = Path(cfg.results_dir) / "runs" / run_id
    if rec.is_complete(run_dir):
        return rec.RunRecord.load(run_dir)
    configure_cpu(cfg.trainer)
    if not is_primary():
        return _train_run(cfg, run_id, run_dir)
    ensure_writable(run_dir)
    with rec.run_lock(run_dir), _own_ddp_session():
        if rec.is_complete(run_dir):  # finished by another process between our check and the lock
            return rec.RunRecord.load(run_dir)
        return _train_run(cfg, run_id, run_dir)


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


def _train_run(cfg: DictConfig, run_id: str, run_dir: Path) -> rec.RunRecord:
    primary = is_primary()
    if primary:
        (run_dir / "failed.json").unlink(missing_ok=True)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    source = load_source(cfg)
    prepared = prepare_images(
        source,
        cfg.model.input_size,
        cfg.model.in_chans,
        face_crop=bool(cfg.data.get("face_crop", False)),
        equalize=bool(cfg.data.get("equalize", False)),
        skip_corrupt=bool(cfg.data.get("skip_corrupt", False)),
        cache_dir=Path(cfg.cache_dir) if cfg.get("cache_dir") else None,
        progress=bool(cfg.trainer.progress_bar),
    )
    samples = source.samples[prepared.keep].reset_index(drop=True)
    labels = samples["label"].to_numpy(dtype=np.int64)
    split_params = {k: v for k, v in _plain(cfg.split).items() if k != "name"}
    folds = protocol_folds(make_folds(samples, cfg.split.name, cfg.seed, **split_params), cfg.protocol)
    if primary:
        save_split(run_dir, samples, folds)

    skipped = {**source.skipped, **prepared.skipped}
    rows = []
    for fold in folds:
        if not rec.fold_is_complete(run_dir, fold.index):
            row = train_fold(cfg, run_id, run_dir, fold, prepared.images, labels, source.classes, skipped, len(folds))
            rows.append(row)
    if not primary:  # the record is rank 0's; the others hand back what they trained, unwritten
        return rec.RunRecord(run_id, run_dir, pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame())
    return rec.finish_run(run_dir, len(folds))


def _base_row(cfg: DictConfig, run_id: str, fold: Fold, n_folds: int) -> dict:
    row = {"run_id": run_id, **{axis: cfg[axis].name for axis in rec.AXES}}
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
) -> dict:
    """Fit (resuming from ``last.ckpt`` if a killed run left one), test the best checkpoint, record (rank 0)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    fold = subset_train(fold, labels, cfg.trainer.limit_train_fraction, cfg.seed)
    num_classes = len(classes)
    model = build_model(cfg, num_classes)
    macs = count_macs(model, cfg.model.input_size, cfg.model.in_chans)  # on the fresh model: one eval forward
    loss = build_loss(cfg.loss, labels[fold.train], num_classes)
    module = FERModule(model, loss, cfg.optim, num_classes, cfg.trainer.max_epochs, cfg.loss.get("aux_weight", 1.0))
    module.mixup = build_mixup(cfg.aug.get("mixup"))
    pin = cfg.trainer.pin_memory
    datamodule = FERDataModule(
        images,
        labels,
        fold,
        build_augmentation(cfg.aug.train),
        batch_size=cfg.trainer.batch_size,
        num_workers=cfg.trainer.num_workers,
        pin_memory=torch.cuda.is_available() if pin == "auto" else bool(pin),
        seed=cfg.seed,
    )
    checkpoint_dir = rec.fold_dir(run_dir, fold.index) / "checkpoints"
    has_val = len(fold.val) > 0
    last = checkpoint_dir / "last.ckpt"
    trainer = make_resumable(build_trainer(cfg, checkpoint_dir, has_val=has_val), last, cfg.seed, fold.index)
    resumed = last.exists()
    started = time.perf_counter()
    try:
        if resumed and _stopped_early(last):  # killed between early stopping and the fold's record
            module.history = list(torch.load(last, map_location="cpu", weights_only=False)["ferbench_history"])
        else:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumed else None)
    except RunFailed as exc:
        if is_primary():
            rec.write_failure(run_dir, str(exc), fold.index, len(module.history) + 1)
        raise
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

    epochs_run = len(history)
    row = _base_row(cfg, run_id, fold, n_folds)
    row.update(flatten(module.test_results, classes))
    row.update(
        status="completed",
        epochs_run=epochs_run,
        best_epoch=_best_epoch(history),
        stopped_early=epochs_run < cfg.trainer.max_epochs,
        resumed=resumed,
        processes=world_size,  # training processes (DDP ranks); batch_size is per process
        params=sum(p.numel() for p in model.parameters()),
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
    confusion = pd.DataFrame(module.test_results["confusion"].numpy(), columns=classes)
    confusion.insert(0, "true", classes)
    confusion.insert(0, "fold", fold.index)
    rec.write_fold(run_dir, fold.index, row, history, confusion)
    last.unlink(missing_ok=True)  # only once the fold is recorded: a kill before this resumes from it
    return row


def _stopped_early(last: Path) -> bool:
    """Did the checkpoint's EarlyStopping already stop? Fitting from it again would train one epoch too many."""
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
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
