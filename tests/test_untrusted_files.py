"""Files a hostile user can hand ferbench or plant in a results dir (issue 33, item 1): loading one never runs
its code, and the user reads one line naming the file."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ferbench.data.identity import run_id_of
from ferbench.errors import UnsafeFile
from ferbench.paths import PACKAGE_DIR
from ferbench.records import record as rec
from ferbench.records.safe_load import load_weights
from ferbench.run import run

FERBENCH = [sys.executable, "-c", "from ferbench.cli import main; main()"]


class MakesADirectory:
    """Unpickling this calls ``os.mkdir(marker)``: any code at all could run in its place."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a Lightning checkpoint whose loading would run code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "state_dict": {"model.x": MakesADirectory(marker)}}, path)
    return path


def test_no_torch_load_outside_the_safe_loader():
    """Every load goes through ``load_weights`` (weights_only=True with an allow-list): a new one cannot creep in."""
    found = []
    for path in Path(PACKAGE_DIR).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "load" and getattr(node.value, "id", "") == "torch":
                found.append(f"{path.name}:{node.lineno}")
    assert found and all(f.startswith("safe_load.py:") for f in found), found


def test_safe_loader_keeps_numpy_random_state_and_refuses_code(tmp_path):
    import random

    import numpy as np

    ours = tmp_path / "state.pt"
    torch.save({"numpy": np.random.get_state(), "python": random.getstate(), "t": torch.ones(2)}, ours)
    assert load_weights(ours, "test")["numpy"][1].dtype == np.uint32
    marker = tmp_path / "ran"
    with pytest.raises(UnsafeFile, match="it would call posix.mkdir"):
        load_weights(hostile_checkpoint(tmp_path / "evil.pt", marker), "test")
    assert not marker.exists()


def test_model_init_with_a_hostile_file_runs_none_of_it_and_says_so_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    evil = hostile_checkpoint(tmp_path / "weights.pt", marker)
    argv = [*FERBENCH, "run", f"model.init={evil}", f"results_dir={tmp_path / 'r'}", f"cache_dir={tmp_path / 'c'}"]
    done = subprocess.run([*argv, "trainer.max_epochs=1", "trainer.progress_bar=false"], capture_output=True, text=True)
    assert not marker.exists(), "the file's code ran"
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("ferbench: error:")]
    assert lines == [f"ferbench: error: model.init: {evil} refused, not loaded: it would call posix.mkdir, and only "
                     "tensors, numbers and containers are loaded from a file"], done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr


def test_a_planted_last_checkpoint_runs_none_of_its_code(make_cfg, tmp_path):
    marker = tmp_path / "ran"
    cfg = make_cfg()
    last = rec.checkpoint_dir(rec.run_dir(cfg.results_dir, run_id_of(cfg)), 0) / rec.LAST_CHECKPOINT
    hostile_checkpoint(last, marker)
    with pytest.raises(UnsafeFile, match=f"resume state: {last} refused"):
        run(cfg)
    assert not marker.exists()
    assert last.is_file()  # left where it is for the user to look at: ferbench never loaded it
