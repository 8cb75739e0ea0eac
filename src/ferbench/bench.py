"""``ferbench bench``: the runner's training and evaluation speed beside a hand-written PyTorch loop.

Per case (a paper model at its input size and channels, its paper augmentation, synthetic faces cached as a
uint8 array) it measures images/s of: training through ferbench's own path (FERModule + FERDataModule + the
Trainer of ``build_trainer``), training through a plain loop (same model class, Adam, cross-entropy, a plain
DataLoader over the same arrays and augmentation, the same speed options), evaluation through both, and the
data path alone (loader + augmentation + collate). Warm-up steps are excluded; the device is synchronised only
at the two ends of the timed window, so the measurement adds no stalls of its own.
``--concurrent 1,2,4`` instead starts that many training processes of one case at once and sums their speed.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from ferbench.data.datamodule import FERDataModule, resolve_num_workers, resolve_pin_memory
from ferbench.data.splits import Fold
from ferbench.data.synthetic import generate
from ferbench.data.transforms import BatchAugment, build_augmentation, normalize_batch
from ferbench.errors import ConfigError, FerbenchError
from ferbench.factory import build_datamodule, build_model, build_module, seeded_model_and_loss
from ferbench.models.profile import count_macs
from ferbench.paths import config_dir
from ferbench.training.trainer import build_trainer, configure_cpu, libc_function

PAPER_CASES = ("amdcnn", "shufflecsp", "lightvgg", "mnv3simam")
FALLBACK_CASE = "simplecnn"
NUM_CLASSES = 7


@dataclass(frozen=True)
class Schedule:
    steps: int  # timed steps
    warmup: int  # untimed steps before them (compilation, cuDNN autotuning, worker start-up)


CASE_SCHEDULES = {
    "amdcnn": Schedule(27, 5),
    "shufflecsp": Schedule(27, 5),
    "lightvgg": Schedule(8, 3),
    "mnv3simam": Schedule(6, 2),
}
"""Defaults sized so that all four cases, ``DEFAULT_REPEATS`` times each, run in about 7 minutes on a 2-core CPU
(a window of 7-20 s per path and repeat); a GPU can take --steps 200."""
DEFAULT_SCHEDULE = Schedule(20, 3)
QUICK_SCHEDULE = Schedule(3, 1)
QUICK_BATCH = 16
DEFAULT_REPEATS = 3
"""Each path is timed this many times, alternating (ferbench, plain, ferbench, ...). Images/s are the fastest
window (a shared machine only ever slows one down); the ratios are the median over the repeats of each
ferbench window against the plain window right after it, which share the machine's state. On this project's
2-core VM single 60 s windows gave lightvgg ratios of 0.90 and 1.01 back to back, and the ratio of two
fastest-of-2 windows still ranged 0.94-1.21 over the four cases, where slow phases fell on one path only."""

MAX_UNIQUE_IMAGES = 1024
PRECISION_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def default_cases() -> list[str]:
    """The papers' models that are registered, else the default model."""
    from ferbench.models import MODELS

    cases = [c for c in PAPER_CASES if c in MODELS]
    return cases or [FALLBACK_CASE]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch")
    return torch.device(device)


def compose_case(name: str, batch_size: int, device: torch.device, overrides: Sequence[str] = ()) -> DictConfig:
    """The run config of one case: ``model=<name>``, its paper's ``aug`` if there is one, the user's overrides last."""
    aug = [f"aug={name}"] if (config_dir() / "aug" / f"{name}.yaml").is_file() else []
    base = [
        f"model={name}",
        *aug,
        f"trainer.batch_size={batch_size}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.progress_bar=false",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


def case_images(cfg: DictConfig, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic faces at the case's size as the runner caches them: uint8 N x H x W x C (grey repeated to RGB)."""
    unique = min(n, MAX_UNIQUE_IMAGES)  # drawing a face costs more than training on it at 224 pixels
    images, labels = generate(unique, int(cfg.model.input_size), seed)
    rows = np.arange(n) % unique
    images = np.repeat(images[rows][..., None], int(cfg.model.in_chans), axis=-1)
    return np.ascontiguousarray(images), labels[rows]


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


# ------------------------------------------------------------------------------------------------ ferbench


def ferbench_path(s: Setting, evaluate: bool = True, barrier: Callable[[], None] | None = None) -> dict:
    """Train (and test) through FERModule + FERDataModule + build_trainer's Trainer, as ``run`` does."""
    cfg = s.cfg
    all_rows = np.arange(len(s.images))
    fold = Fold(0, all_rows, np.arange(0), all_rows)
    model, loss = seeded_model_and_loss(cfg, NUM_CLASSES, s.labels)
    module = build_module(cfg, model, loss, NUM_CLASSES)
    datamodule = build_datamodule(
        cfg, s.images, s.labels, fold, s.batch_size, num_workers=s.num_workers, pin_memory=s.pin_memory
    )
    timer = StepTimer(s.schedule.warmup, s.total - 1, synchronizer(s.device), barrier)
    trainer = build_trainer(
        cfg,
        None,
        has_val=False,
        max_epochs=1,
        devices=1,
        limit_train_batches=s.total,
        limit_val_batches=0,
        limit_test_batches=s.total,
        callbacks=[timer],
    )
    memory = PeakMemory(s.device)
    memory.reset()
    trainer.fit(module, datamodule=datamodule)
    result = {
        "train_ips": s.timed_images / timer.train.seconds,
        "peak_mb": memory.peak_mb(),
        "params": sum(p.numel() for p in model.parameters()),
        "wall_start": timer.train.wall_start,
        "wall_end": timer.train.wall_end,
    }
    if evaluate:
        trainer.test(module, datamodule=datamodule, verbose=False)
        result["eval_ips"] = s.timed_images / timer.test.seconds
    return result


# ------------------------------------------------------------------------------------------------ plain loop


class PlainDataset(Dataset):
    """What one writes by hand: index the array, augment, hand back a uint8 tensor and the label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.augment is not None:
            image = self.augment(image=image)["image"]
            image = image[:, :, None] if image.ndim == 2 else image
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.labels[i])


def plain_path(s: Setting, evaluate: bool = True) -> dict:
    """The same training and evaluation as a hand-written loop, honouring the same ``trainer`` speed keys."""
    cfg, t, device = s.cfg, s.cfg.trainer, s.device
    torch.manual_seed(cfg.seed)
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    model = build_model(cfg, NUM_CLASSES).to(device=device, memory_format=layout)
    if t.compile:
        model.compile(mode=None if t.compile_mode == "default" else t.compile_mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    dtype = PRECISION_DTYPES.get(str(t.precision))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    augment = build_augmentation(cfg.aug.train)
    on_device = BatchAugment.from_albumentations(augment) if t.gpu_augment and augment is not None else None
    loader = DataLoader(
        PlainDataset(s.images, s.labels, None if on_device is not None else augment),
        batch_size=s.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=s.num_workers,
        pin_memory=s.pin_memory,
        persistent_workers=s.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    window = Window(synchronizer(device))
    memory = PeakMemory(device)
    memory.reset()
    model.train()
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = normalize_batch(x, 0.5, 0.5, t.channels_last, on_device)
        if i == s.schedule.warmup:
            window.open()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if i == s.total - 1:
            window.close()
            break
    result = {"train_ips": s.timed_images / window.seconds, "peak_mb": memory.peak_mb()}
    if evaluate:
        result["eval_ips"] = _plain_eval(s, model, layout, dtype)
    return result


def _plain_eval(s: Setting, model: torch.nn.Module, layout: torch.memory_format, dtype: torch.dtype | None) -> float:
    loader = DataLoader(
        PlainDataset(s.images, s.labels, None),
        batch_size=s.batch_size,
        num_workers=s.num_workers,
        pin_memory=s.pin_memory,
    )
    window = Window(synchronizer(s.device))
    model.eval()
    probs = []
    with torch.inference_mode(), torch.autocast(s.device.type, dtype=dtype, enabled=dtype is not None):
        for i, (x, _) in enumerate(loader):
            x = normalize_batch(x.to(s.device, non_blocking=True), 0.5, 0.5, s.cfg.trainer.channels_last)
            if i == s.schedule.warmup:
                window.open()
            probs.append(torch.softmax(model(x).float(), dim=1))
            if i == s.total - 1:
                torch.cat(probs).cpu()
                window.close()
                break
    return s.timed_images / window.seconds


# ------------------------------------------------------------------------------------------------ data path


def data_path(s: Setting) -> float:
    """images/s of ferbench's training loader alone: indexing, augmentation (unless on the device), collate."""
    all_rows = np.arange(len(s.images))
    datamodule = FERDataModule(
        s.images,
        s.labels,
        Fold(0, all_rows, np.arange(0), all_rows),
        build_augmentation(s.cfg.aug.train),
        batch_size=s.batch_size,
        num_workers=s.num_workers,
        pin_memory=s.pin_memory,
        seed=s.cfg.seed,
    )
    if s.cfg.trainer.gpu_augment:
        datamodule.augment_on_device()
    start = None
    for i, _ in enumerate(datamodule.train_dataloader()):
        if i == s.schedule.warmup - 1:
            start = time.perf_counter()
        if i == s.total - 1:
            break
    if start is None:
        raise FerbenchError("the data-path measurement needs at least one warm-up step")
    return s.timed_images / (time.perf_counter() - start)


def device_augment_ips(s: Setting) -> float | None:
    """images/s of the batched on-device augmentation alone (``trainer.gpu_augment``), else None."""
    augment = build_augmentation(s.cfg.aug.train)
    if not s.cfg.trainer.gpu_augment or augment is None:
        return None
    on_device = BatchAugment.from_albumentations(augment)
    batch = torch.from_numpy(s.images[: s.batch_size]).to(s.device)
    window = Window(synchronizer(s.device))
    for i in range(s.total):
        if i == s.schedule.warmup:
            window.open()
        normalize_batch(batch, 0.5, 0.5, False, on_device)
    window.close()
    return s.timed_images / window.seconds


# ------------------------------------------------------------------------------------------------ the table


def machine_info(device: torch.device, cfg: DictConfig) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "torch_version": torch.__version__,
        "lightning_version": pl.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.trainer.channels_last),
        "compile": bool(cfg.trainer.compile),
        "cudnn_benchmark": bool(cfg.trainer.cudnn_benchmark),
        "matmul_precision": str(cfg.trainer.matmul_precision),
        "gpu_augment": bool(cfg.trainer.gpu_augment),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_case(
    name: str,
    device: torch.device,
    batch_size: int,
    schedule: Schedule,
    overrides: Sequence[str] = (),
    repeats: int = DEFAULT_REPEATS,
) -> dict:
    """One row: both paths' training and evaluation speed (the fastest of ``repeats`` alternating windows each),
    their ratios (the median of the paired windows' ratios; ``train_ratio_min``/``_max`` their range), the data
    path and peak memory."""
    cfg = compose_case(name, batch_size, device, overrides)
    configure_cpu(cfg.trainer)
    s = make_setting(cfg, device, schedule, batch_size)
    ours_runs, plain_runs = [], []
    for _ in range(repeats):
        ours_runs.append(ferbench_path(s))
        plain_runs.append(plain_path(s))
    ours, plain = fastest(ours_runs), fastest(plain_runs)
    ratios = paired_ratios(ours_runs, plain_runs, "train_ips")
    pairs = zip(ours_runs, plain_runs, strict=True)
    overheads = [step_overhead_ms(o["train_ips"], p["train_ips"], batch_size) for o, p in pairs]
    data_ips = data_path(s)
    row = {
        "case": name,
        "input_size": int(cfg.model.input_size),
        "in_chans": int(cfg.model.in_chans),
        "aug": str(cfg.aug.name),
        "params": ours["params"],
        "batch_size": batch_size,
        "warmup": schedule.warmup,
        "steps": schedule.steps,
        "repeats": repeats,
        "num_workers": s.num_workers,
        "ferbench_train_ips": ours["train_ips"],
        "plain_train_ips": plain["train_ips"],
        "train_ratio": float(np.median(ratios)),
        "train_ratio_min": min(ratios),
        "train_ratio_max": max(ratios),
        "train_overhead_ms_per_step": float(np.median(overheads)),
        "ferbench_eval_ips": ours["eval_ips"],
        "plain_eval_ips": plain["eval_ips"],
        "eval_ratio": float(np.median(paired_ratios(ours_runs, plain_runs, "eval_ips"))),
        "data_ips": data_ips,
        "data_to_train_ratio": data_ips / ours["train_ips"],
        "device_aug_ips": device_augment_ips(s),
        "ferbench_peak_mb": ours["peak_mb"],
        "plain_peak_mb": plain["peak_mb"],
        "peak_mem_kind": PeakMemory(device).kind,
    }
    row.update(machine_info(device, cfg))
    return row


def fastest(runs: Sequence[dict]) -> dict:
    """The best images/s of each kind over repeated windows of one path; the highest peak memory."""
    best = dict(runs[0])
    for key in ("train_ips", "eval_ips"):
        if key in best:
            best[key] = max(r[key] for r in runs)
    best["peak_mb"] = max(r["peak_mb"] for r in runs)
    return best


def paired_ratios(ours_runs: Sequence[dict], plain_runs: Sequence[dict], key: str) -> list[float]:
    """ferbench's images/s over the plain loop's, window by window (each pair timed back to back)."""
    return [o[key] / p[key] for o, p in zip(ours_runs, plain_runs, strict=True)]


def step_overhead_ms(ours_ips: float, plain_ips: float, batch_size: int) -> float:
    """Milliseconds per training step that ferbench's path adds to the plain loop's (negative: it is faster).

    A fixed cost per step (Lightning's hooks, the epoch metrics), so unlike the ratio it carries from one model
    to another: where the host issues kernels slower than a GPU runs them, it is added to every step as it is.
    """
    return 1000 * batch_size * (1 / ours_ips - 1 / plain_ips)


def run_benchmark(
    cases: Sequence[str] | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    quick: bool = False,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    on_case: Callable[[str], None] | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
) -> pd.DataFrame:
    """Every case, one row each; written to ``out`` (CSV) when given. ``quick``: 1 warm-up + 3 steps at batch 16,
    timed once."""
    torch_device = resolve_device(device)
    batch = batch_size or (QUICK_BATCH if quick else 64)
    repeats = (1 if quick else DEFAULT_REPEATS) if repeats is None else repeats
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    rows = []
    for name in cases or default_cases():
        schedule = QUICK_SCHEDULE if quick else CASE_SCHEDULES.get(name, DEFAULT_SCHEDULE)
        schedule = Schedule(steps or schedule.steps, schedule.warmup if warmup is None else warmup)
        if on_case is not None:
            on_case(name)
        rows.append(bench_case(name, torch_device, batch, schedule, overrides, repeats))
    table = pd.DataFrame(rows)
    if out is not None:
        _write_csv(table, out)
    return table


def _write_csv(table: pd.DataFrame, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, out)


# ------------------------------------------------------------------------------------------------ concurrent runs


class FileBarrier:
    """N processes wait here until all have arrived, so their timed windows overlap."""

    def __init__(self, folder: Path, parties: int, timeout_s: float = 900.0) -> None:
        self.folder, self.parties, self.timeout_s = Path(folder), parties, timeout_s

    def __call__(self) -> None:
        (self.folder / f"{os.getpid()}.ready").touch()
        deadline = time.monotonic() + self.timeout_s
        while len(list(self.folder.glob("*.ready"))) < self.parties:
            if time.monotonic() > deadline:
                raise FerbenchError(f"concurrent benchmark: the other processes never reached {self.folder}")
            time.sleep(0.01)


def train_only(
    name: str,
    device: str,
    batch_size: int,
    schedule: Schedule,
    overrides: Sequence[str],
    barrier: Callable[[], None] | None = None,
) -> dict:
    """One process of a concurrent measurement: ferbench's training path only."""
    torch_device = resolve_device(device)
    cfg = compose_case(name, batch_size, torch_device, overrides)
    configure_cpu(cfg.trainer)
    s = make_setting(cfg, torch_device, schedule, batch_size)
    result = ferbench_path(s, evaluate=False, barrier=barrier)
    result.update(images=s.timed_images, threads=torch.get_num_threads(), num_workers=s.num_workers)
    return result


def run_concurrent(
    cases: Sequence[str] | None = None,
    counts: Sequence[int] = (1, 2, 4),
    steps: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    quick: bool = False,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    on_case: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """For each case and N in ``counts``: N training processes at once (each with cores // N threads); total images/s.

    ``total_ips`` sums the processes' own speeds; ``aggregate_ips`` is every timed image over the span from the
    first window's start to the last one's end (lower when the windows did not fully overlap).
    """
    torch_device = resolve_device(device)
    batch = batch_size or (QUICK_BATCH if quick else 64)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    for name in cases or default_cases():
        schedule = QUICK_SCHEDULE if quick else CASE_SCHEDULES.get(name, DEFAULT_SCHEDULE)
        schedule = Schedule(steps or schedule.steps * 3, max(schedule.warmup, 5 if not quick else 1))
        base_ips = None
        for n in counts:
            if on_case is not None:
                on_case(f"{name} x{n}")
            results = _launch(name, n, torch_device, batch, schedule, overrides, max(1, cores // n))
            total = sum(r["train_ips"] for r in results)
            span = max(r["wall_end"] for r in results) - min(r["wall_start"] for r in results)
            base_ips = total if base_ips is None and n == 1 else base_ips
            row = {
                "case": name,
                "concurrent": n,
                "batch_size": batch,
                "steps": schedule.steps,
                "threads_per_process": max(1, cores // n),
                "num_workers_per_process": results[0]["num_workers"],
                "total_ips": total,
                "aggregate_ips": sum(r["images"] for r in results) / span,
                "per_process_ips_mean": total / n,
                "per_process_ips_min": min(r["train_ips"] for r in results),
                "speedup_vs_1": total / base_ips if base_ips else None,
                "peak_mb_per_process_max": max(r["peak_mb"] for r in results),
            }
            row.update(machine_info(torch_device, compose_case(name, batch, torch_device, overrides)))
            rows.append(row)
    table = pd.DataFrame(rows)
    if out is not None:
        _write_csv(table, out)
    return table


def _launch(
    name: str,
    n: int,
    device: torch.device,
    batch_size: int,
    schedule: Schedule,
    overrides: Sequence[str],
    threads: int,
) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="ferbench-bench-") as tmp:
        folder = Path(tmp)
        processes = []
        for k in range(n):
            command = [
                sys.executable,
                "-m",
                "ferbench.cli",
                "bench",
                "--cases",
                name,
                "--device",
                device.type,
                "--batch-size",
                str(batch_size),
                "--steps",
                str(schedule.steps),
                "--warmup",
                str(schedule.warmup),
                "--child-json",
                str(folder / f"result_{k}.json"),
                "--barrier",
                str(folder),
                "--parties",
                str(n),
                *overrides,
                f"trainer.threads={threads}",
            ]
            processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        errors = [p.communicate()[1] for p in processes]
        failed = [(p.returncode, e) for p, e in zip(processes, errors, strict=True) if p.returncode != 0]
        if failed:
            code, err = failed[0]
            raise FerbenchError(f"a concurrent benchmark process exited {code}: {err.strip().splitlines()[-1:]}")
        return [json.loads((folder / f"result_{k}.json").read_text()) for k in range(n)]


def child_main(
    name: str,
    device: str,
    batch_size: int,
    schedule: Schedule,
    overrides: Sequence[str],
    json_path: Path,
    barrier_dir: Path,
    parties: int,
) -> None:
    result = train_only(name, device, batch_size, schedule, overrides, FileBarrier(barrier_dir, parties))
    Path(json_path).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------ packed training

DENSE_PEAK_TFLOPS = {
    # NVIDIA's datasheet dense (no sparsity) peaks, SXM parts: (fp32, tf32, bf16) TFLOP/s
    "H200": (67.0, 494.7, 989.4),
    "H100": (67.0, 494.7, 989.4),
    "A100": (19.5, 156.0, 312.0),
    "L40S": (91.6, 183.0, 362.0),
    "A10": (31.2, 62.5, 125.0),
}
"""Per-GPU dense peaks by name fragment, for ``mfu``. A GPU not listed gets no MFU figure rather than a guess."""


def device_peak_tflops(device: torch.device, cfg: DictConfig) -> float | None:
    """The device's dense peak for the precision the case trains in (bf16 autocast, TF32, or plain fp32)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (fp32, tf32, bf16) in DENSE_PEAK_TFLOPS.items():
        if fragment in name:
            if str(cfg.trainer.precision).startswith("bf16"):
                return bf16
            return tf32 if str(cfg.trainer.matmul_precision) != "highest" else fp32
    return None


def packed_path(s: Setting, k: int) -> dict:
    """``k`` models of the case (seeds 0..k-1) trained as one pack: images/s over all of them."""
    from ferbench.factory import build_net
    from ferbench.training.packed import Member, PackedTrainer
    from ferbench.training.packing import pack_settings

    cfg = s.cfg
    rows = np.arange(len(s.images))
    members = []
    for seed in range(k):
        seeded = cfg.copy()
        seeded.seed = seed
        net = build_net(seeded, NUM_CLASSES, s.labels)
        augment = build_augmentation(cfg.aug.train)
        members.append(Member(f"bench {seed}", seed, Fold(0, rows, rows[:0], rows[:0]), net, augment, Path(".")))
    settings = pack_settings(cfg, NUM_CLASSES)
    settings.device, settings.progress = s.device, None
    trainer = PackedTrainer(members, s.images, s.labels, settings)
    batches = [trainer._epoch_batches(i) for i in range(k)]
    lr = torch.full((k,), float(cfg.optim.lr), device=s.device)
    sync = synchronizer(s.device)
    memory = PeakMemory(s.device)
    memory.reset()
    window = Window(sync)
    for step in range(s.total):
        if step == s.schedule.warmup:
            window.open()
        trainer._step([b[step] for b in batches], [True] * k, lr)
    window.close()
    return {"train_ips": k * s.timed_images / window.seconds, "peak_mb": memory.peak_mb()}


def run_pack_benchmark(
    packs: Sequence[int],
    cases: Sequence[str] | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    quick: bool = False,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    on_case: Callable[[str], None] | None = None,
    repeats: int | None = None,
) -> pd.DataFrame:
    """For each case and K in ``packs``: K models packed against the same K one after another (the solo
    ferbench path's images/s, measured once per case), alternating windows, the fastest of each kept."""
    torch_device = resolve_device(device)
    batch = batch_size or (QUICK_BATCH if quick else 64)
    repeats = (1 if quick else 2) if repeats is None else repeats
    rows = []
    for name in cases or default_cases():
        schedule = QUICK_SCHEDULE if quick else CASE_SCHEDULES.get(name, DEFAULT_SCHEDULE)
        schedule = Schedule(steps or schedule.steps, schedule.warmup)
        cfg = compose_case(name, batch, torch_device, overrides)
        configure_cpu(cfg.trainer)
        s = make_setting(cfg, torch_device, schedule, batch)
        macs = count_macs(build_model(cfg, NUM_CLASSES), int(cfg.model.input_size), int(cfg.model.in_chans))
        peak = device_peak_tflops(torch_device, cfg)
        for k in packs:
            if on_case is not None:
                on_case(f"{name} pack {k}")
            solo_runs, packed_runs = [], []
            for _ in range(repeats):
                solo_runs.append(ferbench_path(s, evaluate=False))
                packed_runs.append(packed_path(s, k))
            solo, packed = fastest(solo_runs), fastest(packed_runs)
            row = {
                "case": name,
                "pack": k,
                "batch_size": batch,
                "steps": schedule.steps,
                "repeats": repeats,
                "macs": macs,
                "packed_images_per_s": packed["train_ips"],
                "solo_images_per_s": solo["train_ips"],
                "pack_speedup": packed["train_ips"] / solo["train_ips"],
                "packed_peak_mb": packed["peak_mb"],
                "solo_peak_mb": solo["peak_mb"],
                # training work = 3 x forward (forward, and backward's two products), 2 FLOPs per multiply-add
                "mfu": 3 * 2 * macs * packed["train_ips"] / (peak * 1e12) if peak else None,
                "solo_mfu": 3 * 2 * macs * solo["train_ips"] / (peak * 1e12) if peak else None,
                "peak_tflops": peak,
            }
            row.update(machine_info(torch_device, cfg))
            rows.append(row)
    table = pd.DataFrame(rows)
    if out is not None:
        _write_csv(table, out)
    return table
