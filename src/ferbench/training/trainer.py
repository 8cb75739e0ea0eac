"""The Lightning Trainer from the ``trainer`` config: devices, precision, speed options, early stopping, checkpoints."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging, TQDMProgressBar

from ferbench.errors import ConfigError
from ferbench.quiet import quiet_known_warnings
from ferbench.records.record import BEST_CHECKPOINT
from ferbench.training.resume import MovableCheckpoint
from ferbench.training.rules import StoppingRule

PROGRESS_REFRESH = 20
"""Batches between progress-bar redraws: a redraw every batch costs more than a small model's step on a GPU."""

MATMUL_PRECISIONS = ("highest", "high", "medium")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def quiet_lightning() -> None:
    """Progress bar on, quiet otherwise: no banner about devices, no hints we have already weighed."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_known_warnings()  # Lightning's, torchmetrics' and scipy's weighed warnings: listed in ferbench.quiet


class SpeedOptions(pl.Callback):
    """Applies the ``trainer`` speed keys to the module and data module Lightning is given.

    ``channels_last`` (weights and input batches NHWC), ``compile`` (``compile_model``: in place, so state
    dicts and checkpoints keep their keys) and ``gpu_augment`` (``aug.train`` as batched torch ops on the
    training device, after the transfer, instead of albumentations per image in the loader).
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        gpu_augment: bool = False,
    ) -> None:
        self.channels_last, self.compile, self.compile_mode = channels_last, compile, compile_mode
        self.gpu_augment = gpu_augment

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        model = pl_module.model
        datamodule = trainer.datamodule
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
            if datamodule is not None:
                datamodule.channels_last = True
        if self.gpu_augment and datamodule is not None and stage == "fit":
            datamodule.augment_on_device()
        if self.compile and getattr(model, "_compiled_call_impl", None) is None:
            compile_model(model, None if self.compile_mode == "default" else self.compile_mode)


def compile_model(model: torch.nn.Module, mode: str | None = None) -> None:
    """``torch.compile`` in place, the training forward of a model with auxiliary classifiers too.

    ``nn.Module.compile`` compiles ``__call__`` only; FERModule trains such a model through its
    ``forward_with_aux``, which would otherwise run eager. Both stay out of the state dict. Shapes are static
    (``dynamic=False``: a run has a few batch sizes, each compiled once): inductor's dynamic shapes failed on
    amdcnn's CPU graph ("cannot determine truth value of Relational", torch 2.14.1, Xeon with AMX).
    """
    model.compile(mode=mode, dynamic=False)
    if hasattr(model, "forward_with_aux"):
        model.forward_with_aux = torch.compile(model.forward_with_aux, mode=mode, dynamic=False)


def speed_options(t: Any) -> SpeedOptions:
    mode = str(t.get("compile_mode", "default"))
    if mode not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return SpeedOptions(
        channels_last=bool(t.get("channels_last", False)),
        compile=bool(t.get("compile", False)),
        compile_mode=mode,
        gpu_augment=bool(t.get("gpu_augment", False)),
    )


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)


def libc_function(name: str) -> Any | None:
    """A function of the C library (glibc's malloc tuning and statistics) through ctypes; None off Linux or
    where the C library lacks it (musl has no ``mallopt``, glibc before 2.33 no ``mallinfo2``)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of unmapping it.

    By default every tensor above 32 MiB gets fresh pages from the kernel (zeroed, page-faulted) and gives
    them back when freed: at 128x128 (lightvgg, batch 32) that was 40% of a CPU training step, spent in the
    kernel. With mmap off and trimming off, the next step reuses the same heap. No-op where libc is not
    glibc. Returns whether it applied.
    """
    mallopt = libc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a cluster job's share, ``taskset``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def free_cores() -> int:
    """The usable cores that other processes are not already busy on (the 1-minute load average), at least one.

    Asked once per process: later, the load counts this process's own training.
    """
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    cores = usable_cores()
    return max(1, min(cores, cores - int(busy + 0.5)))


def resolve_threads(value: Any) -> int | None:
    """``trainer.threads``: ``auto`` = the free cores (a run beside a busy process does not oversubscribe: with
    two OpenMP threads on one free core a step ran 25x slower than with one); 0 = torch's own choice (every
    core); an integer = that many."""
    if value in (None, 0, "0"):
        return None
    if value == "auto":
        return free_cores()
    try:
        threads = int(value)
    except (TypeError, ValueError):
        threads = -1
    if threads < 1:
        raise ConfigError(f"trainer.threads must be 'auto', 0 (torch's choice) or an integer >= 1, got {value!r}")
    return threads


def configure_cpu(t: Any) -> None:
    """The process-wide CPU keys of a ``trainer`` config: torch threads and memory reuse."""
    if threads := resolve_threads(t.get("threads", 0)):
        torch.set_num_threads(threads)
    if t.get("keep_freed_memory", True):
        keep_freed_memory()


def set_matmul_precision(value: str) -> None:
    """``high`` lets float32 matmuls (and cuDNN convolutions) use TF32 on Ampere and later GPUs."""
    if value not in MATMUL_PRECISIONS:
        raise ConfigError(f"trainer.matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, got {value!r}")
    torch.set_float32_matmul_precision(value)
    torch.backends.cudnn.allow_tf32 = value != "highest"


def apply_numerics(t: Any) -> None:
    """The process-wide numeric settings of a ``trainer`` config, set for the solo and the packed loop alike.

    ``matmul_precision`` (TF32 or not) and ``deterministic`` are in the run id; Lightning applies ``deterministic``
    (and ``cudnn_benchmark``) inside ``pl.Trainer``, which a pack never builds, so a pack trained under whatever
    the process had before (issue 32). This does what Lightning's ``_set_torch_flags`` does, explicitly both ways:
    a run with ``deterministic=false`` after one with ``true`` in the same process is not left deterministic."""
    set_matmul_precision(str(t.get("matmul_precision", "highest")))
    value = t.get("deterministic", False)
    deterministic = bool(value)  # "warn", as Lightning takes it: deterministic where torch can, warning elsewhere
    torch.use_deterministic_algorithms(deterministic, warn_only=value == "warn")
    torch.backends.cudnn.benchmark = bool(t.get("cudnn_benchmark", False)) and not deterministic
    if deterministic:  # cuBLAS is reproducible only with a fixed workspace (Lightning sets the same)
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"


class EpochLines(pl.Callback):
    """Where stderr is not a terminal: one ``ferbench: epoch N/M ...`` line per epoch (losses, accuracy, seconds).

    The module writes its history row in its own epoch-end hook, which Lightning calls after the callbacks' one:
    each row is printed when the next epoch starts, or when training ends."""

    def __init__(self) -> None:
        self.printed = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.printed = len(getattr(pl_module, "history", []))  # a resumed fold's earlier epochs were printed then

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_new(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_new(trainer, pl_module)

    def _print_new(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", [])
        for row in history[self.printed :]:
            shown = ", ".join(
                f"{k} {row[k]:.4g}" for k in ("train_loss", "train_acc", "val_loss", "val_acc") if k in row
            )
            seconds = row.get("epoch_seconds", 0.0)
            print(
                f"ferbench: epoch {int(row['epoch'])}/{trainer.max_epochs}: {shown} ({seconds:.1f} s)", file=sys.stderr
            )
        self.printed = len(history)


class ValLossStopping(pl.Callback):
    """Carries the shared ``StoppingRule`` into the Lightning module, which feeds it at each epoch's end
    (``rules.close_epoch``) and stops the trainer when it says so; its state goes into ``last.ckpt`` under this
    callback's key, so a resumed fold stops where it would have and keeps its best epoch."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.rule = StoppingRule(patience, min_delta)
        self._loaded: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ValLossStopping"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # a test after the fit keeps the rule that chose the tested epoch
            pl_module.stopping = self.rule

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # restored here, not in load_state_dict: a checkpoint from before the rule kept its best epoch needs the
        # module's history, loaded by now
        if self._loaded is not None:
            self.rule.restore(self._loaded, getattr(pl_module, "history", ()))

    def state_dict(self) -> dict[str, Any]:
        return self.rule.state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = dict(state)


def build_trainer(cfg, checkpoint_dir: Path | None, has_val: bool, **overrides: Any) -> pl.Trainer:
    """Early stopping and best-checkpoint choice watch ``val_loss``: the validation part, never test.

    ``checkpoint_dir=None`` builds the same Trainer without checkpointing (the benchmark); ``overrides`` go to
    ``pl.Trainer`` as they are (``limit_train_batches``, extra ``callbacks``, ...).
    """
    quiet_lightning()
    t = cfg.trainer
    apply_numerics(t)
    callbacks: list[pl.Callback] = [speed_options(t), *overrides.pop("callbacks", [])]
    if checkpoint_dir is not None:
        callbacks.append(
            MovableCheckpoint(
                dirpath=checkpoint_dir,
                filename=Path(BEST_CHECKPOINT).stem,
                monitor="val_loss" if has_val else None,
                mode="min",
                save_last=True,
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    # always there, patience or not: the rule also says which epoch is the best (the record's best_epoch)
    patience = int(t.get("early_stopping_patience", 0)) if has_val else 0
    callbacks.append(ValLossStopping(patience, float(t.get("early_stopping_min_delta", 0.0))))
    if ema := weight_average(t):
        callbacks.append(ema)
    bar = bool(t.progress_bar) and sys.stderr.isatty()
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH, leave=False))
    elif t.progress_bar:  # a log file or a pipe: one line per epoch, not thousands of carriage returns
        callbacks.append(EpochLines())
    options: dict[str, Any] = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        deterministic=t.deterministic,
        benchmark=bool(t.get("cudnn_benchmark", False)) and not t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=checkpoint_dir is not None,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
    )
    options.update(overrides)
    return pl.Trainer(**options)


def ema_decay(t: Any) -> float:
    """``trainer.ema_decay``, checked: 0 (off) or a decay in (0, 1)."""
    decay = float(t.get("ema_decay", 0) or 0)
    if not 0 <= decay < 1:
        raise ConfigError(f"trainer.ema_decay must be in [0, 1), got {decay}")
    return decay


def weight_average(t: Any) -> pl.Callback | None:
    """``trainer.ema_decay`` > 0: Lightning's EMA of the weights, updated every step. It is what validation
    sees, what the best checkpoint holds (the current weights ride along for resuming) and so what is tested."""
    decay = ema_decay(t)
    return EMAWeightAveraging(decay=decay, use_buffers=True) if decay else None


def training_device(cfg: Any) -> torch.device:
    """The device a run trains on, as Lightning's ``accelerator`` choice resolves it."""
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pin_memory_for(cfg) -> bool:
    """``trainer.pin_memory``, ``auto`` resolved once for every loader: pinned when the run trains on a GPU (not
    merely where one is present: a CPU run on a GPU host pins nothing)."""
    from ferbench.data.datamodule import resolve_pin_memory

    return resolve_pin_memory(cfg.trainer.pin_memory, training_device(cfg).type == "cuda")
