"""Every registered attention module: shape kept, parameter counts as the papers state them, configs build."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ferbench.attention import ATTENTION, attention_factory, eca_kernel_size
from ferbench.paths import config_dir

NAMES = ATTENTION.names()
ATTN_CONFIGS = sorted((config_dir() / "attn").glob("*.yaml"))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(name: str, channels: int, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return attention_factory(name, **kwargs)(channels)


def test_registry_holds_every_mechanism():
    assert set(NAMES) == {
        "none",
        "se",
        "cbam",
        "eca",
        "scse",
        "csa",
        "csa_channel",
        "csa_spatial",
        "ca",
        "sa",
        "mcbam",
        "simam",
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [8, 24, 64, 72])
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (5, 7), (16, 16)])
def test_shape_is_kept(name, channels, hw):
    x = torch.randn(2, channels, *hw)
    y = build(name, channels)(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


# --- parameter counts: the papers' formulas and tables ------------------------------------------


@pytest.mark.parametrize(("channels", "reduction"), [(64, 16), (128, 16), (512, 16), (64, 4), (256, 8)])
def test_se_has_2c2_over_r_parameters(channels, reduction):
    """Paper 004 Table 1: SE has 2C^2/r parameters."""
    assert n_params(build("se", channels, reduction=reduction)) == 2 * channels**2 // reduction


def test_se_bias_adds_the_fc_biases():
    assert n_params(build("se", 64, bias=True)) == 2 * 64**2 // 16 + 64 // 16 + 64


@pytest.mark.parametrize(
    ("channels", "reduction", "k"),
    [(64, 16, 7), (128, 16, 7), (256, 8, 3), (512, 16, 5)],
)
def test_cbam_has_2c2_over_r_plus_2k2_parameters(channels, reduction, k):
    """Paper 004 Table 1: CBAM has 2C^2/r + 2k^2 parameters."""
    cbam = build("cbam", channels, reduction=reduction, kernel_size=k)
    assert n_params(cbam) == 2 * channels**2 // reduction + 2 * k**2


@pytest.mark.parametrize("channels", [8, 64, 512, 2048])
@pytest.mark.parametrize("hw", [(1, 1), (7, 7)])
def test_simam_has_no_parameters(channels, hw):
    """Paper 004 Table 1: SimAM adds 0 parameters."""
    assert n_params(build("simam", channels)) == 0


@pytest.mark.parametrize(
    ("channels", "k"),
    [(1, 1), (2, 1), (8, 3), (24, 3), (64, 3), (72, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)],
)
def test_eca_kernel_size_adapts_to_channels(channels, k):
    """ECA eq. 12 / paper 001 eq. 4 with gamma=2, b=1 (ECA's reference code: C=64 -> 3, C=256 -> 5)."""
    assert eca_kernel_size(channels) == k
    assert n_params(build("eca", channels)) == k
    assert n_params(build("csa_channel", channels)) == k


def test_eca_kernel_size_can_be_fixed():
    assert n_params(build("eca", 512, kernel_size=9)) == 9
    assert eca_kernel_size(64, gamma=1, b=1) == 7  # |6 + 1|_odd


@pytest.mark.parametrize("channels", [8, 64, 512])
def test_paper003_sa_has_19_parameters(channels):
    """Paper 003 Table 1: SA on the 8-channel stem has 19 parameters (3x3 conv 2 -> 1 with bias)."""
    assert n_params(build("sa", channels)) == 19


def test_paper003_ca_on_512_channels_has_262144_parameters():
    """Paper 003 Table 1: CA on 512 channels has 262,144 = 512^2 parameters."""
    assert n_params(build("ca", 512)) == 262_144


def test_paper003_table1_attention_rows_from_configs():
    """The shipped sa/ca configs, not only the class defaults, give paper 003's counts."""
    sa = OmegaConf.to_container(OmegaConf.load(config_dir() / "attn" / "sa.yaml"))
    ca = OmegaConf.to_container(OmegaConf.load(config_dir() / "attn" / "ca.yaml"))
    assert n_params(attention_factory(sa.pop("name"), **sa)(8)) == 19
    assert n_params(attention_factory(ca.pop("name"), **ca)(512)) == 262_144


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("none", 0),
        ("se", 512),  # 2 * 64^2 / 16
        ("cbam", 512 + 98),  # + 2 * 7^2
        ("eca", 3),
        ("csa_channel", 3),
        ("csa_spatial", 3),  # 1x1 conv 2 -> 1 with bias
        ("csa", 6),  # ECA (3) + spatial (3)
        ("scse", 64 * 32 + 32 + 32 * 64 + 64 + 65),  # cSE r=2 with biases + sSE 64 -> 1 with bias
        ("ca", 64 * 64),  # 2 * 64^2 / 2
        ("sa", 19),
        ("mcbam", 512 + 2 * (25 + 9 + 1) + 3),  # CAM + MSAM (three convs 2 -> 1, fuse 3 -> 1)
        ("simam", 0),
    ],
)
def test_parameter_count_at_64_channels(name, expected):
    assert n_params(build(name, 64)) == expected


# --- configs and the factory ---------------------------------------------------------------------


def test_every_registered_name_has_a_config():
    assert {path.stem for path in ATTN_CONFIGS} == set(NAMES)


@pytest.mark.parametrize("path", ATTN_CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_through_the_factory(path: Path):
    options = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert "_target_" not in options
    name = options.pop("name")
    assert name == path.stem
    layer = attention_factory(name, **options)(32)
    x = torch.randn(2, 32, 6, 6)
    assert layer(x).shape == x.shape


def test_unknown_name_lists_the_choices():
    with pytest.raises(KeyError, match=r"unknown attention 'cbm'; choose from: ca, cbam, csa, .*simam"):
        attention_factory("cbm")


def test_unknown_kwarg_fails_at_build():
    with pytest.raises(TypeError):
        attention_factory("se", kernel_size=3)(64)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("cbam", {"kernel_size": 4}),
        ("sa", {"kernel_size": 0}),
        ("eca", {"kernel_size": 2}),
        ("mcbam", {"kernel_sizes": [5, 2]}),
    ],
)
def test_even_kernels_are_rejected(name, kwargs):
    with pytest.raises(ValueError, match="odd"):
        build(name, 16, **kwargs)


def test_scse_rejects_unknown_combine():
    with pytest.raises(ValueError, match="combine"):
        build("scse", 16, combine="mean")


# --- behaviour --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_input_and_every_parameter(name):
    layer = build(name, 24)
    x = torch.randn(2, 24, 8, 8, requires_grad=True)
    layer(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_in_eval_mode(name):
    layer = build(name, 24).eval()
    x = torch.randn(3, 24, 9, 9)
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize(
    ("name", "factor"),
    [("se", 0.5), ("ca", 0.5), ("eca", 0.5), ("sa", 0.5), ("cbam", 0.25)],
)
def test_zero_weights_give_the_sigmoid_midpoint(name, factor):
    """With all weights zero every gate is sigmoid(0) = 1/2; CBAM multiplies two gates in sequence."""
    layer = build(name, 16)
    for p in layer.parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(layer(x), factor * x)


@pytest.mark.parametrize("name", ["csa", "scse"])
def test_parallel_branches_are_summed(name):
    """CSA (paper 001 eq. 1) and scSE (sum): x*1/2 + x*1/2 = x when every weight is zero."""
    layer = build(name, 16)
    for p in layer.parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(layer(x), x)


def test_scse_max_combine_takes_the_larger_map():
    layer = build("scse", 16, combine="max")
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(layer(x), torch.maximum(layer.cse(x), layer.sse(x)))


def test_csa_is_the_sum_of_its_two_branches():
    csa = build("csa", 32)
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(csa(x), csa.channel(x) + csa.spatial(x))


def test_csa_spatial_pools_max_first():
    """Paper 001 eq. 2 stacks [GMP_c; GAP_c]: weight (1, 0) picks the channel max."""
    layer = build("csa_spatial", 4)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        layer.conv.bias.zero_()
    x = torch.arange(8.0).view(1, 4, 1, 2)  # channel max per pixel: 6, 7
    expected = x * torch.sigmoid(torch.tensor([6.0, 7.0])).view(1, 1, 1, 2)
    torch.testing.assert_close(layer(x), expected)


def test_eca_with_identity_kernel_gates_each_channel_by_its_mean():
    layer = build("eca", 64)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 3))
    x = torch.randn(2, 64, 4, 4)
    torch.testing.assert_close(layer(x), x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True)))


def test_eca_mixes_neighbouring_channels_only():
    """k = 3: channel 10's gate depends on channels 9..11 and on no other."""
    layer = build("eca", 64)
    x = torch.randn(1, 64, 3, 3, requires_grad=True)
    gate = layer.gate(x)[0, 10, 0, 0]
    (grad,) = torch.autograd.grad(gate, x)
    touched = grad.abs().sum(dim=(0, 2, 3)).nonzero().flatten().tolist()
    assert touched == [9, 10, 11]


@pytest.mark.parametrize("name", ["ca", "cbam", "mcbam"])
def test_cbam_channel_gate_is_sigmoid_of_summed_mlp_outputs(name):
    """Woo et al. eq. 2: sigmoid(MLP(avg) + MLP(max)) with one shared MLP (also ca and mcbam's CAM)."""
    layer = build(name, 64, reduction=4)
    cam = getattr(layer, "channel", layer)
    x = torch.randn(2, 64, 5, 5)
    mlp = cam.mlp
    expected = torch.sigmoid(mlp(x.mean(dim=(2, 3), keepdim=True)) + mlp(x.amax(dim=(2, 3), keepdim=True)))
    torch.testing.assert_close(cam.gate(x), expected)
    assert not torch.allclose(expected, torch.sigmoid(mlp(x.mean(dim=(2, 3), keepdim=True))))


def test_simam_matches_the_energy_formula():
    """1/e* = (t - mu)^2 / (4 (sigma^2 + lambda)) + 1/2 with sigma^2 = sum (x - mu)^2 / (HW - 1)."""
    x = torch.tensor([0.0, 0.0, 0.0, 4.0]).view(1, 1, 2, 2)  # mu = 1, d = (1, 1, 1, 9), sigma^2 = 12 / 3
    lam = 1e-4
    inv_e = torch.tensor([1.0, 1.0, 1.0, 9.0]) / (4 * (4.0 + lam)) + 0.5
    expected = x.flatten() * torch.sigmoid(inv_e)
    torch.testing.assert_close(build("simam", 1)(x).flatten(), expected)
    value = float(build("simam", 1)(x)[0, 0, 1, 1])
    assert math.isclose(value, 4.0 / (1 + math.exp(-(9 / 16.0004 + 0.5))), rel_tol=1e-6)


def test_simam_on_one_pixel_gives_the_neutral_weight():
    x = torch.randn(2, 8, 1, 1)
    torch.testing.assert_close(build("simam", 8)(x), x * torch.sigmoid(torch.tensor(0.5)))


def test_mcbam_fuses_three_scales():
    layer = build("mcbam", 64)
    assert [conv.kernel_size for conv in layer.spatial.branches] == [(5, 5), (3, 3), (1, 1)]
    assert layer.spatial.fuse.in_channels == 3 and layer.spatial.fuse.out_channels == 1


def test_mcbam_accepts_kernel_sizes_from_a_config_list():
    layer = build("mcbam", 16, kernel_sizes=[7, 3])
    assert n_params(layer) == 2 * 16**2 // 16 + 2 * (49 + 9) + 2


def test_small_channel_counts_keep_a_bottleneck_of_one():
    """C < r would give a 0-wide MLP; the bottleneck stays at least 1 channel wide."""
    assert n_params(build("se", 8)) == 2 * 8
    assert n_params(build("cbam", 8)) == 2 * 8 + 98


@pytest.mark.parametrize("path", ATTN_CONFIGS, ids=lambda p: p.stem)
def test_every_config_composes_through_hydra(make_cfg, path: Path):
    """``attn=<name>`` on the command line lands in ``cfg.attn`` and builds as the runner builds it."""
    cfg = make_cfg(f"attn={path.stem}")
    options = OmegaConf.to_container(cfg.attn, resolve=True)
    assert options == OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    layer = attention_factory(options.pop("name"), **options)(16)
    x = torch.randn(2, 16, 3, 3)
    assert layer(x).shape == x.shape
