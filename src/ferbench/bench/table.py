"""One benchmark table: every case's paths timed in alternating windows, with the machine it ran on."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ferbench.bench.cases import (
    CASE_SCHEDULES,
    DEFAULT_REPEATS,
    DEFAULT_SCHEDULE,
    QUICK_BATCH,
    QUICK_SCHEDULE,
    Schedule,
    compose_case,
    default_cases,
    resolve_device,
)
from ferbench.bench.measure import PeakMemory, make_setting
from ferbench.bench.paths import data_path, device_augment_ips, ferbench_path, plain_path
from ferbench.errors import ConfigError
from ferbench.records.atomic import write_csv
from ferbench.training.process import configure_cpu

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
        write_bench_csv(table, out)
    return table


def write_bench_csv(table: pd.DataFrame, out: Path) -> None:
    write_csv(out, table)
