"""Process-wide settings a run applies before it trains, whichever loop trains it: torch's threads, glibc's memory
reuse, the numerics in the run id (TF32, determinism), and the device it trains on."""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from ferbench.errors import ConfigError

MATMUL_PRECISIONS = ("highest", "high", "medium")
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
