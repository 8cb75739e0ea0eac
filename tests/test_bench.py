"""``ferbench bench`` end to end on a tiny case: both paths run, the CSV has every column."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

from ferbench.bench import PeakMemory, compose_case, fastest, paired_ratios, run_benchmark, run_concurrent
from ferbench.bench.cases import NUM_CLASSES, QUICK_SCHEDULE
from ferbench.bench.measure import Window
from ferbench.errors import ConfigError
from ferbench.factory import build_model

COLUMNS = [
    "case",
    "input_size",
    "in_chans",
    "batch_size",
    "steps",
    "ferbench_train_ips",
    "plain_train_ips",
    "train_ratio",
    "train_ratio_min",
    "train_ratio_max",
    "repeats",
    "train_overhead_ms_per_step",
    "ferbench_eval_ips",
    "plain_eval_ips",
    "eval_ratio",
    "data_ips",
    "data_to_train_ratio",
    "ferbench_peak_mb",
    "plain_peak_mb",
    "peak_mem_kind",
    "device",
    "device_name",
    "torch_version",
    "cpu_count",
    "threads",
    "precision",
]


STEPS, BATCH = 2, 8
TIMED_IMAGES = STEPS * BATCH
TINY = ["model.widths=[8,16]"]


@pytest.fixture
def windows(monkeypatch) -> list[Window]:
    """Every timed window the benchmark closes, in order (per repeat: ferbench's training and test windows, then the
    plain loop's), so each column can be checked against the window it came from."""
    closed: list[Window] = []
    real = Window.close

    def close(self: Window) -> None:
        real(self)
        closed.append(self)

    monkeypatch.setattr(Window, "close", close)
    return closed


class DataClock:
    """The data path's clock: its window lasts ``seconds`` exactly."""

    def __init__(self, seconds: float) -> None:
        self.ticks = iter([100.0, 100.0 + seconds])

    def perf_counter(self) -> float:
        return next(self.ticks)


def test_quick_benchmark_writes_its_csv(tmp_path, windows, monkeypatch):
    monkeypatch.setattr("ferbench.bench.paths.time", DataClock(0.5))
    out = tmp_path / "bench" / "quick.csv"
    table = run_benchmark(
        ["simplecnn"], steps=STEPS, batch_size=BATCH, device="cpu", quick=True, out=out, overrides=TINY
    )
    written = pd.read_csv(out)
    assert list(written["case"]) == ["simplecnn"] and set(COLUMNS) <= set(written.columns)
    row = table.iloc[0]
    cfg = compose_case("simplecnn", BATCH, torch.device("cpu"), TINY)
    assert (row["input_size"], row["in_chans"]) == (cfg.model.input_size, cfg.model.in_chans)
    assert (row["batch_size"], row["steps"], row["warmup"], row["repeats"]) == (BATCH, STEPS, QUICK_SCHEDULE.warmup, 1)
    assert row["params"] == sum(p.numel() for p in build_model(cfg, NUM_CLASSES).parameters())
    # each images/s is the timed images over its own window: ferbench's training and test, then the plain loop's
    assert len(windows) == 4
    speeds = [TIMED_IMAGES / w.seconds for w in windows]
    columns = ["ferbench_train_ips", "ferbench_eval_ips", "plain_train_ips", "plain_eval_ips"]
    assert [row[c] for c in columns] == pytest.approx(speeds, rel=1e-12)
    assert row["data_ips"] == pytest.approx(TIMED_IMAGES / 0.5)
    assert row["data_to_train_ratio"] == pytest.approx(row["data_ips"] / speeds[0])
    assert (
        row["train_ratio"] == row["train_ratio_min"] == row["train_ratio_max"] == pytest.approx(speeds[0] / speeds[2])
    )
    assert row["eval_ratio"] == pytest.approx(speeds[1] / speeds[3])
    step_seconds = {"ferbench": windows[0].seconds / STEPS, "plain": windows[2].seconds / STEPS}
    assert row["train_overhead_ms_per_step"] == pytest.approx(1000 * (step_seconds["ferbench"] - step_seconds["plain"]))
    assert (row["device"], row["threads"], row["cpu_count"]) == ("cpu", torch.get_num_threads(), os.cpu_count())
    assert row["peak_mem_kind"] == PeakMemory(torch.device("cpu")).kind
    assert row["precision"] == str(cfg.trainer.precision) and pd.isna(row["device_aug_ips"])  # no gpu_augment


def test_repeated_windows_keep_each_paths_fastest(windows):
    table = run_benchmark(
        ["simplecnn"], steps=STEPS, batch_size=BATCH, device="cpu", quick=True, repeats=2, overrides=TINY
    )
    row = table.iloc[0]
    assert row["repeats"] == 2 and len(windows) == 8
    ours = [TIMED_IMAGES / windows[k].seconds for k in (0, 4)]  # each repeat: ferbench train, test, plain train, eval
    plain = [TIMED_IMAGES / windows[k].seconds for k in (2, 6)]
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    assert row["ferbench_train_ips"] == pytest.approx(max(ours)) and row["plain_train_ips"] == pytest.approx(max(plain))
    assert row["train_ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two
    assert (row["train_ratio_min"], row["train_ratio_max"]) == pytest.approx((min(ratios), max(ratios)))
    ours = [{"train_ips": 10.0}, {"train_ips": 8.0}, {"train_ips": 9.0}]
    plain = [{"train_ips": 10.0}, {"train_ips": 10.0}, {"train_ips": 8.0}]
    assert paired_ratios(ours, plain, "train_ips") == [1.0, 0.8, 1.125]
    assert fastest([{"train_ips": 3.0, "peak_mb": 5.0}, {"train_ips": 4.0, "peak_mb": 2.0}]) == {
        "train_ips": 4.0,
        "peak_mb": 5.0,
    }
    with pytest.raises(ConfigError, match="--repeats"):
        run_benchmark(["simplecnn"], device="cpu", quick=True, repeats=0)


@pytest.mark.slow
def test_concurrent_runs_report_total_throughput(tmp_path):
    out = tmp_path / "concurrent.csv"
    table = run_concurrent(
        ["simplecnn"], counts=[1, 2], steps=2, device="cpu", quick=True, out=out, overrides=["model.widths=[8,16]"]
    )
    assert list(table["concurrent"]) == [1, 2] and out.is_file() and list(table["steps"]) == [2, 2]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert list(table["threads_per_process"]) == [max(1, cores // n) for n in (1, 2)]
    assert list(table["per_process_ips_mean"]) == pytest.approx(list(table["total_ips"] / table["concurrent"]))
    assert (table["per_process_ips_min"] <= table["per_process_ips_mean"]).all()
    speedups = list(table["speedup_vs_1"])
    assert speedups == pytest.approx([1.0, table["total_ips"].iloc[1] / table["total_ips"].iloc[0]])


def test_cpu_peak_memory_sees_a_freed_block_not_the_kept_heap():
    import time

    memory = PeakMemory(torch.device("cpu"))
    if memory.kind != "cpu_peak_heap_in_use":
        pytest.skip("not glibc: the peak resident set is measured instead")
    memory.reset()
    before = memory.sampled_mb()
    block = torch.ones(50_000_000)  # 191 MiB
    deadline = time.monotonic() + 10  # the sampler thread may wait for a core on a loaded machine
    while memory.sampled_mb() < before + 150 and time.monotonic() < deadline:
        time.sleep(0.005)
    del block
    first = memory.peak_mb()
    memory.reset()  # the freed block may stay in the process; the next window must not count it
    time.sleep(0.02)
    second = memory.peak_mb()
    assert first - second > 150
