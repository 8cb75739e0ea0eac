"""A disk that is full, read-only or a file where a folder should be: one ``ferbench: error:`` line naming the
folder, exit 2, and the finished work kept (issue 33, items 8 and 9)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferbench.errors import CannotWrite
from ferbench.records import record as rec
from ferbench.records.atomic import check_writable, write_text
from ferbench.run import run

SMALL = [
    "trainer.max_epochs=1",
    "trainer.batch_size=32",
    "trainer.progress_bar=false",
    "trainer.threads=1",
    "data.options.n_train=140",
    "data.options.n_test=70",
]
DISK_FULL_CHECKPOINTS = (
    "import errno, torch\n"
    "def full(*a, **k):\n"
    "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
    "torch.save = full\n"
    "from ferbench.cli import main; main()\n"
)


def ferbench(*args: str, preamble: str = "from ferbench.cli import main; main()", **env: str):
    command = [sys.executable, "-c", preamble, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def skip_as_root() -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod does not stop writes")


# 8. A full disk while training.


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_after_a_fold_keeps_it_and_the_rerun_trains_only_the_other(make_cfg, monkeypatch, code):
    import ferbench.run as run_module

    cfg = make_cfg("split=kfold", "split.k=2")
    real = run_module.write_fold_result

    def full_on_fold_1(work, result, *args):
        if result.fold.index == 1:
            raise OSError(code, os.strerror(code))
        return real(work, result, *args)

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "write_fold_result", full_on_fold_1)
        with pytest.raises(CannotWrite) as raised:
            run(cfg)
    run_dir = next((Path(cfg.results_dir) / "runs").iterdir())
    assert str(raised.value).startswith(f"{run_dir}: ") and "finished folds are kept" in str(raised.value)
    assert "run the same command to resume" in str(raised.value)
    assert rec.fold_is_complete(run_dir, 0) and not rec.fold_is_complete(run_dir, 1)
    again = run(cfg)
    assert sorted(again.metrics["fold"]) == [0, 1] and rec.is_complete(run_dir)


def test_disk_full_on_a_checkpoint_is_one_line_exit_2_and_the_rerun_finishes(tmp_path):
    results = tmp_path / "results"
    args = [*SMALL, f"results_dir={results}", f"cache_dir={tmp_path / 'cache'}"]
    done = ferbench("run", *args, preamble=DISK_FULL_CHECKPOINTS)
    assert done.returncode == 2, done.stderr
    [line] = lines(done.stderr)
    run_dir = next((results / "runs").iterdir())
    assert line.startswith(f"ferbench: error: {run_dir}: no space left on device while training")
    assert line.endswith("the finished folds are kept there: free some space and run the same command to resume")
    again = ferbench("run", *args)
    assert again.returncode == 0, again.stderr
    assert rec.is_complete(run_dir)


def test_disk_full_mid_write_names_the_folder_and_keeps_the_old_file(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")

    def full(tmp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    from ferbench.records.atomic import write_atomic

    with pytest.raises(CannotWrite, match=f"^{tmp_path}: cannot write: No space left on device"):
        write_atomic(target, full)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# 9. A read-only results or cache folder, and a file given as a folder.


def test_a_file_as_cache_dir_is_one_line_exit_2_before_decoding(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for cache in (blocker, blocker / "sub"):
        done = ferbench("run", *SMALL, f"results_dir={tmp_path / 'results'}", f"cache_dir={cache}")
        assert done.returncode == 2
        assert lines(done.stderr) == [
            f"ferbench: error: {blocker}: cannot write the image cache (cache_dir) here: it is a file, not a folder"
        ]


def test_a_read_only_ferbench_cache_is_one_line_exit_2(tmp_path):
    skip_as_root()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = ferbench("run", *SMALL, f"results_dir={tmp_path / 'results'}", FERBENCH_CACHE=str(locked / "cache"))
    assert done.returncode == 2
    assert lines(done.stderr) == [
        f"ferbench: error: {locked}: cannot write the image cache (cache_dir) here (read-only?): Permission denied"
    ]


def test_render_only_into_a_read_only_results_dir_is_one_line_exit_2(tmp_path):
    skip_as_root()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = ferbench("table", "amdcnn/table3", "--render-only", f"results_dir={locked}")
    assert done.returncode == 2
    assert lines(done.stderr)[-1] == f"ferbench: error: {locked}: cannot write here (read-only?): Permission denied"


@pytest.mark.parametrize(
    "code, says", [(errno.EACCES, "here (read-only?)"), (errno.EROFS, "here (read-only?)"), (errno.EEXIST, "a file")]
)
def test_a_folder_that_refuses_a_file_is_named_even_as_root(tmp_path, monkeypatch, code, says):
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CannotWrite, match=f"^{tmp_path}: cannot write the probe") as raised:
        check_writable(tmp_path, "the probe")
    assert says in str(raised.value) and isinstance(raised.value, OSError) and raised.value.errno == code
