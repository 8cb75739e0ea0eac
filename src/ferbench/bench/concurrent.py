"""``ferbench bench --concurrent 1,2,4``: that many training processes of one case at once, their total
images/s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch

from ferbench.bench.cases import (
    CASE_SCHEDULES,
    DEFAULT_SCHEDULE,
    QUICK_BATCH,
    QUICK_SCHEDULE,
    Schedule,
    compose_case,
    default_cases,
    resolve_device,
)
from ferbench.bench.measure import make_setting
from ferbench.bench.paths import ferbench_path
from ferbench.bench.table import machine_info, write_bench_csv
from ferbench.errors import FerbenchError
from ferbench.training.process import configure_cpu

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
        write_bench_csv(table, out)
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
