"""``ferbench bench --options``: each CPU/GPU speed option's training images/s against fp32 eager, per case.

The options are the trainer keys a run can set (``trainer.channels_last``, ``trainer.precision=bf16-mixed``,
both, ``trainer.compile``), timed on the case's own network, loss and optimiser, one training step at a time
(forward, backward, Adam update) on random images of the case's input size. Options are timed in alternating
windows (fp32, channels_last, bf16, both, fp32, ...), so a machine that slows down for a while slows every option
alike; images/s is the median window, and the speedup is the median of each window's ratio to the fp32 window of
the same round.

Only public pieces are used: the factory builds the network and its loss exactly as a run does.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ferbench.bench.measure import synchronizer
from ferbench.factory import build_net

OPTIONS = ("fp32", "channels_last", "bf16", "bf16+channels_last", "compile")
"""What each option sets: ``fp32`` is eager float32 (``trainer=default``); ``bf16`` is ``trainer.precision=
bf16-mixed`` (autocast); ``compile`` is ``trainer.compile=true`` in fp32, timed only where a compiler is present."""


@dataclass(frozen=True)
class OptionResult:
    case: str
    option: str
    images_per_s: float
    speedup: float
    threads: int
    batch_size: int
    windows: int
    note: str = ""


def compiler_present() -> bool:
    """torch.compile on a CPU builds C++ kernels: it needs a C++ compiler on the PATH."""
    return torch.cuda.is_available() or any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def available_options(requested: Sequence[str] = OPTIONS) -> tuple[list[str], dict[str, str]]:
    """(options to time, {option: why it is skipped})."""
    skipped = {}
    if "compile" in requested and not compiler_present():
        skipped["compile"] = "no C++ compiler on the PATH (torch.compile needs one on a CPU)"
    return [o for o in requested if o not in skipped], skipped


def make_step(cfg, option: str, device: torch.device, num_classes: int = 7) -> Callable[[], None]:
    """One training step of the case's network under ``option``, on fixed random images (what is timed)."""
    size, chans, batch = int(cfg.model.input_size), int(cfg.model.in_chans), int(cfg.trainer.batch_size)
    labels = np.arange(batch) % num_classes
    net = build_net(cfg, num_classes, labels).to(device)
    layout = torch.channels_last if "channels_last" in option else torch.contiguous_format
    net = net.to(memory_format=layout)
    x = torch.randn(batch, chans, size, size, device=device).to(memory_format=layout)
    y = torch.as_tensor(labels, device=device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    forward = torch.compile(net, dynamic=False) if option == "compile" else net
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if option.startswith("bf16")
        else contextlib.nullcontext
    )
    net.train()

    def step() -> None:
        with autocast():
            loss, _ = forward(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_window(step: Callable[[], None], steps: int, sync: Callable[[], None]) -> float:
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - started


def bench_options(
    case: str,
    cfg,
    device: torch.device,
    options: Sequence[str] = OPTIONS,
    steps: int = 10,
    warmup: int = 3,
    windows: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[OptionResult]:
    """Time ``options`` for one case in ``windows`` alternating rounds (see the module docstring)."""
    chosen, skipped = available_options(options)
    if "fp32" not in chosen:
        chosen = ["fp32", *chosen]
    sync = synchronizer(device)
    batch = int(cfg.trainer.batch_size)
    steppers = {}
    for option in chosen:
        try:
            steppers[option] = make_step(cfg, option, device)
            for _ in range(warmup):  # compilation, oneDNN's first-call kernel choice
                steppers[option]()
        except Exception as exc:  # noqa: BLE001 - a failing option (inductor on a model) is a row, not the end
            if option == "fp32":
                raise
            steppers.pop(option, None)
            skipped[option] = f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
    chosen = [o for o in chosen if o in steppers]
    seconds: dict[str, list[float]] = {o: [] for o in chosen}
    for window in range(windows):
        for option in chosen:
            seconds[option].append(time_window(steppers[option], steps, sync))
        if progress:
            progress(f"{case}: window {window + 1} of {windows} timed ({', '.join(chosen)})")
    results = []
    for option in chosen:
        ratios = [f / s for f, s in zip(seconds["fp32"], seconds[option], strict=True)]
        results.append(
            OptionResult(
                case,
                option,
                round(batch * steps / statistics.median(seconds[option]), 1),
                round(statistics.median(ratios), 3),
                torch.get_num_threads(),
                batch,
                windows,
            )
        )
    for option, why in skipped.items():
        results.append(OptionResult(case, option, float("nan"), float("nan"), torch.get_num_threads(), batch, 0, why))
    return results


def results_frame(results: Sequence[OptionResult]) -> pd.DataFrame:
    return pd.DataFrame([r.__dict__ for r in results])


def _spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


@contextlib.contextmanager
def busy_processes(n: int, limit_s: float = 3600.0):
    """``n`` CPU-bound processes beside the timing (another job, a test suite): how the options and thread counts
    behave on a shared machine. They stop when the block ends (or after ``limit_s``, whatever happens)."""
    import multiprocessing

    procs = [multiprocessing.Process(target=_spin, args=(time.monotonic() + limit_s,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()
