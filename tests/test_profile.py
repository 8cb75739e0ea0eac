"""Profiles against hand counts and against the papers' own figures (paper 002 text, paper 003 Table 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferbench.attention import attention_factory
from ferbench.models import create_model
from ferbench.models.profile import count_macs, count_parameters, frames_per_second, inference_speed, layer_table

# Paper 003, Table 1: (operator, input shape, params). Softmax (0 params) is folded into the loss here.
TABLE1 = [
    ("C, k=3,s=1,p=1", [1, 40, 40], 88),
    ("SA", [8, 40, 40], 19),
    ("CSP_BLOCK", [8, 40, 40], 1_260),
    ("CSP_BLOCK", [24, 40, 40], 5_204),
    ("CSP_BLOCK", [32, 20, 20], 12_864),
    ("CSP_BLOCK", [72, 10, 10], 85_068),
    ("CSP_BLOCK", [216, 5, 5], 430_884),
    ("CSP_BLOCK", [360, 3, 3], 1_076_588),
    ("CA", [512, 2, 2], 262_144),
    ("C, k=3,s=1,p=1", [512, 2, 2], 32_263),
    ("AdaptiveAvgPool2d", [7, 2, 2], 0),
]
TABLE1_TOTAL = 1_906_382
# Our CSP block has 6.5 * in_channels parameters fewer than the paper's (see models/shufflecsp.py).
CSP_SHORTFALL_PER_IN_CHANNEL = 6.5


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


def test_counts_by_hand() -> None:
    model = tiny()
    assert count_parameters(model) == (2 * 9 + 2) + (32 * 3 + 3)
    assert count_macs(model, 4, 1) == 2 * 9 * 16 + 32 * 3


def test_layer_table_columns_and_totals() -> None:
    frame = layer_table(tiny(), 4, 1)
    assert list(frame.columns[:3]) == ["Input", "Operator", "Param #"]
    assert frame["Param #"].sum() == frame.attrs["total_params"] == count_parameters(tiny())
    assert frame["Output"].tolist() == [[2, 4, 4], [32], [3]]
    assert frame.attrs["forward_backward_mb"] > 0


def shufflecsp_table():
    return layer_table(create_model("shufflecsp", num_classes=7, in_chans=1), 40, 1)


def test_shufflecsp_table1_shapes_operators_and_exact_rows() -> None:
    frame = shufflecsp_table()
    assert frame["Operator"].tolist() == [op for op, _, _ in TABLE1]
    assert frame["Input"].tolist() == [shape for _, shape, _ in TABLE1]
    exact = [i for i, (op, _, _) in enumerate(TABLE1) if op != "CSP_BLOCK"]
    assert frame["Param #"].iloc[exact].tolist() == [TABLE1[i][2] for i in exact]


def test_shufflecsp_csp_blocks_against_table1() -> None:
    frame = shufflecsp_table()
    for (op, shape, paper), ours in zip(TABLE1, frame["Param #"], strict=True):
        if op == "CSP_BLOCK":
            assert paper - ours == CSP_SHORTFALL_PER_IN_CHANNEL * shape[0]
            assert abs(ours - paper) / paper < 0.05
    total = frame.attrs["total_params"]
    assert TABLE1_TOTAL - total == 4_628  # 0.24 % short
    assert abs(total - TABLE1_TOTAL) / TABLE1_TOTAL < 0.003


def test_shufflecsp_ablation_switches() -> None:
    full = count_parameters(create_model("shufflecsp", num_classes=7, in_chans=1))
    base = count_parameters(create_model("shufflecsp", num_classes=7, in_chans=1, use_sa=False, use_ca=False))
    assert full - base == 19 + 262_144
    by_groups = [
        count_parameters(create_model("shufflecsp", num_classes=7, in_chans=1, groups=g)) for g in (1, 2, 4, 8)
    ]
    assert by_groups == sorted(by_groups, reverse=True)


AMDCNN_PARAMS = 1.6e6
AMDCNN_MACS_48 = 138.98e6
# The paper's FLOPs come from TensorFlow's profiler, which also counts normalisation, pooling, activations and
# the attention's element-wise products; ours count only convolutions and matrix products. Ours come out 7.5 %
# below at 48x48 and 8.0 % below its RAF-DB figure (633.98 M) at 100x100: the same ratio at both sizes, so the
# layers agree and the gap is what is counted. Tolerance: 10 %.
MACS_TOLERANCE = 0.10


@pytest.mark.parametrize("attn", ["none", "mcbam"])
def test_amdcnn_parameters_and_macs_near_paper(attn: str) -> None:
    model = create_model("amdcnn", num_classes=7, in_chans=1, n_aux=3, attn_layer=attention_factory(attn))
    assert abs(count_parameters(model) - AMDCNN_PARAMS) / AMDCNN_PARAMS < 0.02
    macs = count_macs(model, 48, 1)
    assert abs(macs - AMDCNN_MACS_48) / AMDCNN_MACS_48 < MACS_TOLERANCE


def test_count_macs_restores_training_mode() -> None:
    model = create_model("amdcnn", num_classes=7, in_chans=1).train()
    count_macs(model, 48, 1)
    assert model.training
    assert torch.is_grad_enabled()


def test_profile_command_prints_every_figure(capsys):
    from ferbench.cli import main

    main(["profile", "model=amdcnn", "attn=mcbam", "--device", "cpu"])
    out = capsys.readouterr().out
    for figure in ("parameters", "multiply-adds", "size (KB", "activations", "frames/s at batch 1"):
        assert figure in out


class Clock:
    """A fake ``time.perf_counter`` that only the model's forward advances: timings without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowStart(nn.Module):
    """A forward that takes 50 ms (on ``clock``) for its first 5 calls (lazy set-up), then 2 ms; counts calls."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.clock, self.calls = clock, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.clock.now += 0.05 if self.calls <= 5 else 0.002
        return self.conv(x)


def test_frame_rate_excludes_warm_up_and_runs_many_iterations(monkeypatch) -> None:
    import time

    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    model = SlowStart(clock).train()
    fps = frames_per_second(model, 8, 1, seconds=0.2, warmup=5, min_iterations=20)
    assert fps == pytest.approx(500)  # 2 ms a pass once warm; the 5 slow passes timed too would give < 200
    assert 5 + 100 <= model.calls <= 5 + 101 and model.training  # warm-up, then 0.2 s of 2 ms passes; mode restored


def test_inference_speed_names_its_device_and_leaves_the_model_where_it_was(monkeypatch) -> None:
    import time

    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    model = SlowStart(clock)
    speed = inference_speed(model, 4, 1, "cpu", seconds=0.2)
    assert speed["fps_batch1"] == pytest.approx(500)  # 2 ms a warm pass on the fake clock
    assert str(speed["fps_device"]).startswith("cpu (")
    assert next(model.parameters()).device.type == "cpu"


def test_profile_layers_flag_adds_the_per_layer_table_for_any_model(capsys):
    from ferbench.cli import main

    main(["profile", "model=amdcnn", "--device", "cpu"])
    plain = capsys.readouterr().out
    main(["profile", "model=amdcnn", "--device", "cpu", "--layers"])
    layered = capsys.readouterr().out
    assert "Operator" not in plain and "Operator" in layered
