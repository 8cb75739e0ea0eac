"""``ferbench bench`` end to end on a tiny case: both paths run, the CSV has every column."""

from __future__ import annotations

import pandas as pd
import pytest

from ferbench.bench import fastest, paired_ratios, run_benchmark, run_concurrent
from ferbench.errors import ConfigError

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


def test_quick_benchmark_writes_its_csv(tmp_path):
    out = tmp_path / "bench" / "quick.csv"
    table = run_benchmark(
        ["simplecnn"], steps=2, batch_size=8, device="cpu", quick=True, out=out, overrides=["model.widths=[8,16]"]
    )
    written = pd.read_csv(out)
    assert list(written["case"]) == ["simplecnn"] and set(COLUMNS) <= set(written.columns)
    row = table.iloc[0]
    for key in ("ferbench_train_ips", "plain_train_ips", "ferbench_eval_ips", "plain_eval_ips", "data_ips"):
        assert row[key] > 0, key
    assert row["train_ratio"] == pytest.approx(row["ferbench_train_ips"] / row["plain_train_ips"])  # one window
    seconds_per_step = {path: 8 / row[f"{path}_train_ips"] for path in ("ferbench", "plain")}
    expected_overhead_ms = 1000 * (seconds_per_step["ferbench"] - seconds_per_step["plain"])
    assert row["train_overhead_ms_per_step"] == pytest.approx(expected_overhead_ms)
    assert (
        row["device"] == "cpu"
        and row["peak_mem_kind"] in ("cpu_peak_heap_in_use", "cpu_peak_rss")
        and row["ferbench_peak_mb"] > 0
    )


def test_repeated_windows_keep_each_paths_fastest():
    table = run_benchmark(
        ["simplecnn"], steps=2, batch_size=8, device="cpu", quick=True, repeats=2, overrides=["model.widths=[8,16]"]
    )
    row = table.iloc[0]
    assert row["repeats"] == 2
    assert row["train_ratio_min"] <= row["train_ratio"] <= row["train_ratio_max"]
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
    assert list(table["concurrent"]) == [1, 2] and out.is_file()
    assert (table["total_ips"] > 0).all() and table["speedup_vs_1"].iloc[0] == pytest.approx(1.0)


def test_cpu_peak_memory_sees_a_freed_block_not_the_kept_heap():
    import time

    import torch

    from ferbench.bench import PeakMemory

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
