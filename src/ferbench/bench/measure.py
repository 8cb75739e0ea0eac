"""How ``ferbench bench`` measures: timed windows, peak memory, one setting per case."""

from __future__ import annotations

import ctypes
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ferbench.bench.cases import Schedule, case_images
from ferbench.data.datamodule import resolve_num_workers, resolve_pin_memory
from ferbench.errors import FerbenchError
from ferbench.training.process import libc_function

# ------------------------------------------------------------------------------------------------ measuring


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33+)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use_reader() -> Callable[[], int] | None:
    """Bytes malloc has handed out and not taken back (all arenas, mmapped blocks included); None off glibc."""
    mallinfo2 = libc_function("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.restype = MallInfo2

    def read() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return read


class PeakMemory:
    """CUDA: ``max_memory_allocated``. CPU: the peak of malloc's bytes in use, sampled every ``SAMPLE_S``.

    Not the resident set: with ``trainer.keep_freed_memory`` the process keeps freed heap for reuse, so its
    peak RSS is that of the biggest path measured so far, not this one's. Off glibc, the peak resident set.
    """

    SAMPLE_S = 0.002

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._read = heap_in_use_reader() if device.type != "cuda" else None
        if device.type == "cuda":
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "cpu_peak_heap_in_use" if self._read is not None else "cpu_peak_rss"
        self._peak = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._read is not None:
            self._start_sampling()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
            except OSError:
                pass  # elsewhere the peak is the process's lifetime peak (ru_maxrss)

    def _start_sampling(self) -> None:
        self._stop_sampling()
        self._peak, self._stop = self._read(), threading.Event()

        def sample(stop: threading.Event = self._stop) -> None:
            while not stop.wait(self.SAMPLE_S):
                self._peak = max(self._peak, self._read())

        self._thread = threading.Thread(target=sample, name="ferbench-peak-memory", daemon=True)
        self._thread.start()

    def _stop_sampling(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def sampled_mb(self) -> float:
        """The CPU heap's peak the sampler has seen so far, without stopping it (0 where nothing samples)."""
        return self._peak / 2**20 if self._read is not None else 0.0

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self._read is not None:
            self._stop_sampling()
            return max(self._peak, self._read()) / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class Window:
    """The timed window: opened at the step after the warm-up, closed after the last step."""

    def __init__(self, sync: Callable[[], None], barrier: Callable[[], None] | None = None) -> None:
        self.sync, self.barrier = sync, barrier
        self.start = self.end = self.wall_start = self.wall_end = None

    def open(self) -> None:
        if self.barrier is not None:
            self.barrier()
        self.sync()
        self.wall_start, self.start = time.time(), time.perf_counter()

    def close(self) -> None:
        self.sync()
        self.wall_end, self.end = time.time(), time.perf_counter()

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            raise FerbenchError("the timed window never closed: fewer batches than warm-up + steps")
        return self.end - self.start


class StepTimer(pl.Callback):
    """Opens a window at batch ``warmup`` of training and of testing, closes it after batch ``last``."""

    def __init__(self, warmup: int, last: int, sync: Callable[[], None], barrier: Callable[[], None] | None = None):
        self.warmup, self.last = warmup, last
        self.train, self.test = Window(sync, barrier), Window(sync)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.train.open()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.last:
            self.train.close()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == self.warmup:
            self.test.open()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == self.last:
            self.test.close()


@dataclass
class Setting:
    """What both paths share for one case."""

    cfg: DictConfig
    images: np.ndarray
    labels: np.ndarray
    device: torch.device
    schedule: Schedule
    batch_size: int
    num_workers: int
    pin_memory: bool

    @property
    def total(self) -> int:
        return self.schedule.warmup + self.schedule.steps

    @property
    def timed_images(self) -> int:
        return self.schedule.steps * self.batch_size


def make_setting(cfg: DictConfig, device: torch.device, schedule: Schedule, batch_size: int) -> Setting:
    images, labels = case_images(cfg, schedule_images(schedule, batch_size), seed=cfg.seed)
    accelerated = device.type != "cpu"
    return Setting(
        cfg=cfg,
        images=images,
        labels=labels,
        device=device,
        schedule=schedule,
        batch_size=batch_size,
        num_workers=resolve_num_workers(cfg.trainer.num_workers, accelerated),
        pin_memory=resolve_pin_memory(cfg.trainer.pin_memory, accelerated),
    )


def schedule_images(schedule: Schedule, batch_size: int) -> int:
    return (schedule.warmup + schedule.steps) * batch_size
