"""CPU speed options: thread choice on a shared machine, and the options benchmark's table (what it measures is
in results/bench/ and the notes; these tests check its shape and its rules, not a speed)."""

from __future__ import annotations

import os

import pytest
import torch

from ferbench.bench import compose_case
from ferbench.bench.options import available_options, bench_options, results_frame
from ferbench.errors import ConfigError
from ferbench.training import process as process_mod
from ferbench.training.process import resolve_threads


def test_omp_threads_wait_passively_unless_the_user_says_otherwise():
    """In a fresh interpreter (this one imported ferbench long ago): unset becomes PASSIVE on import, a user's own
    setting is kept."""
    import subprocess
    import sys

    probe = "import ferbench, os; print(os.environ['OMP_WAIT_POLICY'])"

    def policy_after_import(**env: str) -> str:
        clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        done = subprocess.run([sys.executable, "-c", probe], env={**clean, **env}, capture_output=True, text=True)
        return done.stdout.strip()

    assert policy_after_import() == "PASSIVE"
    assert policy_after_import(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


@pytest.mark.parametrize(("load", "cores", "expected"), [(0.0, 2, 2), (1.2, 2, 1), (3.0, 2, 1), (0.4, 8, 8)])
def test_auto_threads_are_the_cores_not_busy(monkeypatch, load, cores, expected):
    process_mod.free_cores.cache_clear()
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(process_mod, "usable_cores", lambda: cores)
    try:
        assert resolve_threads("auto") == expected
    finally:
        process_mod.free_cores.cache_clear()


def test_thread_settings_other_than_auto():
    assert resolve_threads(0) is None and resolve_threads(3) == 3
    with pytest.raises(ConfigError, match="trainer.threads must be 'auto', 0"):
        resolve_threads("many")
    with pytest.raises(ConfigError, match="got -2"):
        resolve_threads(-2)


def test_options_bench_times_every_option_against_fp32(monkeypatch):
    cfg = compose_case("simplecnn", 4, torch.device("cpu"), ["model.widths=[4,8]", "model.input_size=16"])
    results = bench_options(
        "simplecnn", cfg, torch.device("cpu"), ["channels_last", "bf16"], steps=1, warmup=1, windows=2
    )
    table = results_frame(results)
    assert list(table.option) == ["fp32", "channels_last", "bf16"]
    assert {"case", "option", "images_per_s", "speedup"} <= set(table.columns)
    assert table.speedup.iloc[0] == 1.0 and (table.images_per_s > 0).all()


def test_an_option_that_fails_is_a_row_with_its_error_not_the_end(monkeypatch):
    from ferbench.bench import options as options_mod

    real = options_mod.make_step

    def make_step(cfg, option, device, num_classes=7):
        if option == "bf16":
            raise TypeError("cannot determine truth value of Relational\nmore lines")
        return real(cfg, option, device, num_classes)

    monkeypatch.setattr(options_mod, "make_step", make_step)
    cfg = compose_case("simplecnn", 4, torch.device("cpu"), ["model.widths=[4,8]", "model.input_size=16"])
    table = results_frame(
        bench_options("simplecnn", cfg, torch.device("cpu"), ["channels_last", "bf16"], steps=1, warmup=1, windows=1)
    )
    assert list(table.option) == ["fp32", "channels_last", "bf16"]
    failed = table.set_index("option").loc["bf16"]
    assert failed.note == "failed: TypeError: cannot determine truth value of Relational"
    assert failed.images_per_s != failed.images_per_s  # NaN: not timed


def test_compile_is_skipped_with_the_reason_where_no_compiler_is_present(monkeypatch):
    monkeypatch.setattr("ferbench.bench.options.shutil.which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    chosen, skipped = available_options(["fp32", "compile"])
    assert chosen == ["fp32"] and "no C++ compiler" in skipped["compile"]


def test_options_table_prints(tmp_path, capsys):
    """The --options rows have no device columns: the printer titles them by what they measured (it crashed)."""
    import pandas as pd

    from ferbench.bench.cli import print_bench_table

    table = pd.DataFrame(
        [dict(case="amdcnn", option="fp32", images_per_s=27.8, speedup=1.0, threads=1, batch_size=8, busy=0, note="")]
    )
    print_bench_table(
        table,
        ["case", "option", "images_per_s", "speedup", "threads", "batch_size", "busy", "note"],
        tmp_path / "o.csv",
    )
    assert "ferbench bench --options" in capsys.readouterr().out


def test_pin_memory_auto_follows_the_training_device_not_the_host(make_cfg, monkeypatch):
    """A CPU run on a GPU host pins nothing; the classifier's and the detector's loaders read the one answer."""
    from ferbench.training.process import pin_memory_for

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert pin_memory_for(make_cfg("trainer.accelerator=cpu")) is False
    assert pin_memory_for(make_cfg("trainer.accelerator=gpu")) is True
    assert pin_memory_for(make_cfg("trainer.accelerator=auto")) is True
    assert pin_memory_for(make_cfg("trainer.accelerator=gpu", "trainer.pin_memory=false")) is False
