"""``ferbench bench --pack 1,8,32``: K models trained as one pack against the same K one at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from ferbench.bench.cases import (
    CASE_SCHEDULES,
    DEFAULT_SCHEDULE,
    NUM_CLASSES,
    QUICK_BATCH,
    QUICK_SCHEDULE,
    Schedule,
    compose_case,
    default_cases,
    resolve_device,
)
from ferbench.bench.measure import PeakMemory, Setting, Window, make_setting, synchronizer
from ferbench.bench.paths import ferbench_path
from ferbench.bench.table import fastest, machine_info, write_bench_csv
from ferbench.data.splits import Fold
from ferbench.factory import build_model
from ferbench.models.profile import count_macs
from ferbench.training.process import configure_cpu

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
    from ferbench.factory import task_for
    from ferbench.training.packed.loop import pack_settings
    from ferbench.training.packed.member import Member
    from ferbench.training.packed.trainer import PackedTrainer
    from ferbench.training.process import apply_numerics

    cfg = s.cfg
    rows = np.arange(len(s.images))
    members = []
    for seed in range(k):
        seeded = cfg.copy()
        seeded.seed = seed
        net, augment = task_for(seeded).pack_member(seeded, NUM_CLASSES, s.labels)
        members.append(Member(f"bench {seed}", seed, Fold(0, rows, rows[:0], rows[:0]), net, augment, Path(".")))
    settings = pack_settings(cfg, NUM_CLASSES)
    settings.device, settings.progress = s.device, None
    apply_numerics(cfg.trainer)  # the solo path's build_trainer sets the same: both timed under one setting
    trainer = PackedTrainer(members, s.images, s.labels, settings)
    batches = [trainer.epoch_batches(i) for i in range(k)]
    lr = torch.full((k,), float(cfg.optim.lr), device=s.device)
    sync = synchronizer(s.device)
    memory = PeakMemory(s.device)
    memory.reset()
    window = Window(sync)
    for step in range(s.total):
        if step == s.schedule.warmup:
            window.open()
        trainer.step([b[step] for b in batches], [True] * k, lr)
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
        write_bench_csv(table, out)
    return table
