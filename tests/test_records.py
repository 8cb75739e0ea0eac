"""Atomic writes, losses and metrics helpers."""

import numpy as np
import pytest
import torch

from ferbench.records.atomic import write_atomic, write_text
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
