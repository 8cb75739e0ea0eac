"""One fold, one model, through Lightning: the LightningModule and data module of the run's task (``Task``: a
classifier's ``FERModule``, a detector's ``DetectionModule``).

Resumes from ``last.ckpt`` when a killed run left one, tests the best checkpoint, and returns a ``FoldResult``;
the runner writes the record from it (``training/fold.py``).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import pandas as pd
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from ferbench.data.splits import Fold, subset_train
from ferbench.errors import Interrupted, RunFailed
from ferbench.models.profile import count_macs, inference_speed
from ferbench.records.record import BEST_CHECKPOINT, LAST_CHECKPOINT
from ferbench.records.safe_load import allowed_types
from ferbench.training.fold import FoldData, FoldResult, RunWork
from ferbench.training.lightning.module import FERModule
from ferbench.training.lightning.trainer import build_trainer
from ferbench.training.loggers import build_logger, close_logger
from ferbench.training.resume import make_resumable, read_last
from ferbench.training.rules import stopped_early, stopping_state
from ferbench.training.warm_start import warm_start_callbacks

log = logging.getLogger("ferbench")


def train_solo(work: RunWork, fold: Fold, data: FoldData, pack_note: str = "") -> FoldResult | None:
    """Fit, test the best checkpoint, return the result (None on a DDP rank other than 0: rank 0 records).

    A diverged loss returns a result with ``failure`` set; a signal raises ``Interrupted`` saying where. The fold's
    logger run (``logger`` config group) is closed however the fold ends, failed unless it trained and tested."""
    fold_logger = build_logger(work.cfg, work.run_id, fold.index, work.checkpoint_dir(fold).parent)
    status = "failed"
    try:
        result = _train_solo(work, fold, data, pack_note, fold_logger or False)
        if result is None or result.failure is None:
            status = "success"
        return result
    finally:
        close_logger(fold_logger, status)


def _train_solo(work: RunWork, fold: Fold, data: FoldData, pack_note: str, fold_logger: Any) -> FoldResult | None:
    cfg = work.cfg
    fold = subset_train(fold, data.labels, cfg.trainer.limit_train_fraction, cfg.seed)
    num_classes = len(data.classes)
    model, loss = data.task.model_and_loss(cfg, num_classes, data.labels[fold.train])
    macs = count_macs(model, cfg.model.input_size, cfg.model.in_chans)  # on the fresh model: one eval forward
    module = data.task.module(cfg, model, loss, num_classes)
    datamodule = data.task.datamodule(cfg, data.images, data.labels, fold, data.targets)
    checkpoint_dir = work.checkpoint_dir(fold)
    has_val = len(fold.val) > 0
    last = checkpoint_dir / LAST_CHECKPOINT
    callbacks = warm_start_callbacks(cfg, model)
    built = build_trainer(cfg, checkpoint_dir, has_val=has_val, logger=fold_logger, callbacks=callbacks)
    trainer = make_resumable(built, last, cfg.seed, fold.index)
    state = read_last(last)  # None when absent; one that cannot be read is set aside and the fold starts again
    resumed = state is not None
    if resumed:
        log.info(resumed_line(fold.index, state, cfg.trainer.max_epochs, last))
    started = time.perf_counter()
    try:
        if resumed and stopped_early(state):  # killed between early stopping and the fold's record
            module.history = list(state["ferbench_history"])
            module.stopping.restore(stopping_state(state), module.history)
        else:
            with allowed_types():  # Lightning loads last.ckpt again: weights-only, as read_last did
                trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumed else None, weights_only=True)
    except RunFailed as exc:
        history = pd.DataFrame(module.history)
        return FoldResult(fold, history, failure=str(exc), failed_epoch=len(module.history) + 1)
    except (SystemExit, Interrupted) as exc:  # ours, or Lightning's way out on SIGTERM and Ctrl-C
        where = f"epoch {len(module.history) + 1} of {cfg.trainer.max_epochs}, fold {fold.index} of run {work.run_id}"
        raise _interrupted(exc, trainer, where) from None
    fit_seconds = time.perf_counter() - started
    history = pd.DataFrame(module.history).assign(fold=fold.index)
    train_seconds = float(history["epoch_seconds"].sum()) if "epoch_seconds" in history else fit_seconds
    best = checkpoint_dir / BEST_CHECKPOINT
    world_size = trainer.world_size
    if world_size > 1:
        if rank_zero_only.rank != 0:
            return None
        trainer = _solo_tester(cfg, module, checkpoint_dir, has_val)
    started = time.perf_counter()
    with allowed_types():
        tested = str(best) if best.exists() else None
        trainer.test(module, datamodule=datamodule, ckpt_path=tested, verbose=False, weights_only=True)
    test_seconds = time.perf_counter() - started
    return FoldResult(
        fold,
        history,
        best_epoch=module.stopping.best_epoch,
        test_metrics=module.test_row(data.classes),
        confusion=module.test_results["confusion"],
        resumed=resumed,
        processes=world_size,
        pack_note=pack_note,
        params=sum(p.numel() for p in model.parameters()),
        macs=macs,
        train_seconds=train_seconds,
        fit_seconds=fit_seconds,
        test_seconds=test_seconds,
        # the best checkpoint's weights, batch 1, on the run's device, warm-up excluded (not the test call's time)
        speed=inference_speed(module.model, cfg.model.input_size, cfg.model.in_chans, trainer.strategy.root_device),
        resume_file=last,
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


def resumed_line(fold: int, state: dict, max_epochs: int, last: object) -> str:
    """Where a resumed fold picks up. One killed after its last epoch (or after early stopping) trains nothing
    more and is only tested: said so, not as "from epoch 9 of 8"."""
    done = int(state["epoch"]) + 1
    if stopped_early(state):
        return f"resumed fold {fold}: it had stopped early after epoch {done} of {max_epochs}; testing it ({last})"
    if done >= max_epochs:
        return (
            f"resumed fold {fold}: its {done} epochs were trained already (trainer.max_epochs={max_epochs}); "
            f"nothing more to train, testing it ({last})"
        )
    return f"resumed fold {fold} from epoch {done + 1} of {max_epochs} ({last})"


def _solo_tester(cfg: DictConfig, module: FERModule, checkpoint_dir, has_val: bool) -> pl.Trainer:
    """Under DDP, rank 0 tests alone on one device: a DistributedSampler would pad the test split with repeats.

    The test metrics must then not wait for the other ranks to sync (they have moved on).
    """
    single = OmegaConf.merge(cfg, {"trainer": {"devices": 1, "strategy": "auto", "progress_bar": False}})
    for metric in module.test_metrics.values():
        metric.distributed_available_fn = lambda: False
    return build_trainer(single, checkpoint_dir, has_val=has_val)
