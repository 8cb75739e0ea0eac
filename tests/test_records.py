"""Atomic writes, losses and metrics helpers."""

import numpy as np
import pytest
import torch

from ferbench.records import record as rec
from ferbench.records.atomic import atomic_path, umask_mode, write_atomic, write_bytes, write_stream, write_text
from ferbench.training.losses import AMSoftmax, balanced_class_weights


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text(target, "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_atomic_path_replaces_the_target_on_success(tmp_path):
    target = tmp_path / "deep" / "best.ckpt"  # a missing folder is made
    write_bytes(target, b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".best.ckpt.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # untouched until the block ends
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == umask_mode()
    assert [p.name for p in target.parent.iterdir()] == ["best.ckpt"]


def test_atomic_path_removes_its_temporary_file_on_failure(tmp_path):
    target = tmp_path / "images.npy"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # no target made, no temporary left


def test_write_stream_gives_numpy_a_handle_so_nothing_lands_beside_the_target(tmp_path):
    import numpy as np

    write_stream(tmp_path / "folds.npz", lambda handle: np.savez_compressed(handle, train=np.arange(3)))
    write_stream(tmp_path / "hashes.npy", lambda handle: np.save(handle, np.arange(4)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folds.npz", "hashes.npy"]  # no ".tmp.npz" stray
    with np.load(tmp_path / "folds.npz") as data:
        assert data["train"].tolist() == [0, 1, 2]
    assert np.load(tmp_path / "hashes.npy").tolist() == [0, 1, 2, 3]


def test_atomic_path_gives_each_thread_its_own_temporary_name(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    target, barrier = tmp_path / "cache.json", Barrier(4)

    def write(i: int) -> str:
        with atomic_path(target) as tmp:
            tmp.write_text(str(i))
            barrier.wait(timeout=10)  # all four temporaries exist at once
            return tmp.name

    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(write, range(4)))
    assert len(set(names)) == 4
    assert target.read_text() in {"0", "1", "2", "3"}
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_run_paths_name_the_record_layout(tmp_path):
    run = rec.run_dir(tmp_path, "simplecnn-none-synthetic-holdout-s0-abc")
    assert rec.runs_dir(tmp_path) == tmp_path / "runs"
    assert run == tmp_path / "runs" / "simplecnn-none-synthetic-holdout-s0-abc"
    assert rec.checkpoint_dir(run, 2) == run / "fold_2" / "checkpoints"
    assert rec.best_checkpoint(run) == run / "fold_0" / "checkpoints" / "best.ckpt"
    assert rec.runs_dir(str(tmp_path)) == tmp_path / "runs"  # a config's string path works as well


def test_balanced_weights_match_sklearn_formula():
    labels = np.array([0, 0, 0, 1])
    w = balanced_class_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([4 / (3 * 3), 4 / (3 * 1), 0.0]))


def test_am_softmax_margin_raises_loss_and_keeps_argmax():
    cos = torch.tensor([[0.9, 0.1, -0.2], [0.2, 0.5, 0.4]])
    target = torch.tensor([0, 1])
    with_margin = AMSoftmax(scale=10, margin=0.35, learn_scale=False)
    no_margin = AMSoftmax(scale=10, margin=0.0, learn_scale=False)
    assert with_margin(cos, target) > no_margin(cos, target)
    assert torch.equal(with_margin.to_logits(cos).argmax(1), cos.argmax(1))
    assert torch.isclose(with_margin.scale, torch.tensor(10.0))
    learnable = AMSoftmax(scale=10)
    learnable(cos, target).backward()
    assert learnable.log_scale.grad is not None


def test_run_summary_fits_an_80_column_terminal(tmp_path, monkeypatch):
    """12 columns cut mean ± sd to '0.1430±0.00…' in 80 columns: the table shows the headline metrics only."""
    import io

    import pandas as pd
    from rich.console import Console

    from ferbench import terminal as report
    from ferbench.records.record import RunRecord
    from ferbench.training.metrics import SCALAR_METRICS

    folds = [
        {"fold": k, "epochs_run": 30, "max_epochs": 300, "n_test": 1000, "train_seconds": 12345.6, "model": "amdcnn",
         "attn": "mcbam", "data": "ckplus", "split": "subject_kfold", "seed": 0, "protocol": "standard",
         **{m: 0.1234 + 0.01 * k for m in SCALAR_METRICS}}
        for k in range(10)
    ]  # fmt: skip
    out = io.StringIO()
    monkeypatch.setattr(report, "console", Console(file=out, width=80))
    record = RunRecord("amdcnn-mcbam-ckplus-subject_kfold-s0-0123456789", tmp_path, pd.DataFrame(folds), None, None)
    report.print_run_summary(record)
    text = out.getvalue()
    assert "…" not in text and "0.168±0.030" in text and "split subject_kfold, seed 0" in text
    assert "also in metrics.csv: precision" in text
