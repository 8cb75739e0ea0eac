"""Files a hostile user can hand ferbench or plant in a results dir (issue 33, items 1 and 10): loading one never
runs its code (the user reads one line naming the file), and a checkpoint that is no checkpoint is set aside with a
line instead of failing every rerun or a whole table."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ferbench.data.identity import run_id_of
from ferbench.errors import UnsafeFile
from ferbench.gradcam import ensure_gradcam
from ferbench.paths import PACKAGE_DIR
from ferbench.records import record as rec
from ferbench.records.gradcam_record import GRADCAM_FILE
from ferbench.records.safe_load import load_weights
from ferbench.run import run
from ferbench.training.resume import read_last

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


def test_a_last_checkpoint_that_is_no_checkpoint_is_set_aside_and_the_fold_restarts(make_cfg, caplog):
    cfg = make_cfg("trainer.max_epochs=2")
    last = rec.checkpoint_dir(rec.run_dir(cfg.results_dir, run_id_of(cfg)), 0) / rec.LAST_CHECKPOINT
    last.parent.mkdir(parents=True)
    torch.save({"a": 1}, last)
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        record = run(cfg)
    lines = [r.getMessage() for r in caplog.records if str(last) in r.getMessage()]
    assert len(lines) == 1 and "not a checkpoint" in lines[0] and "starts again from epoch 1" in lines[0], lines
    assert list(record.history["epoch"]) == [1, 2] and not bool(record.metrics["resumed"].iloc[0])
    assert len(list(last.parent.glob("last.ckpt.corrupt-*"))) == 1


def test_read_last_sets_aside_a_dict_without_a_checkpoints_keys(tmp_path, caplog):
    last = tmp_path / "last.ckpt"
    torch.save([1, 2, 3], last)
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        assert read_last(last) is None
    assert not last.exists() and "not a checkpoint" in caplog.text


def test_a_truncated_or_hostile_best_checkpoint_skips_its_grad_cam_row_with_a_line(make_cfg, tmp_path, caplog):
    runs = [run(make_cfg(f"model.drop_rate={rate}")).run_dir for rate in (0.0, 0.1, 0.2)]
    truncated, hostile = rec.best_checkpoint(runs[1]), rec.best_checkpoint(runs[2])
    truncated.write_bytes(truncated.read_bytes()[:500])
    marker = tmp_path / "ran"
    hostile_checkpoint(hostile, marker)
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        written = ensure_gradcam(runs, n_images=3)
    assert written == [runs[0] / GRADCAM_FILE]  # the sound run's maps are made; the table goes on
    assert not marker.exists()
    lines = [r.getMessage() for r in caplog.records]
    assert any(str(truncated) in line and "is corrupt" in line for line in lines), lines
    assert any(runs[1].name in line and "Grad-CAM row skipped" in line for line in lines), lines
    assert any(str(hostile) in line and "refused" in line and "Grad-CAM row skipped" in line for line in lines), lines
    assert len(list(truncated.parent.glob("best.ckpt.corrupt-*"))) == 1
    assert not (runs[1] / GRADCAM_FILE).exists() and not (runs[2] / GRADCAM_FILE).exists()
