"""``ConvNormAct``, the one conv-norm-activation layer every model builds from, and what the models built of it keep:
their parameter counts and the state-dict keys recorded runs' checkpoints hold."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from ferbench.factory import build_model
from ferbench.models.layers import GN_GROUPS, ConvNormAct, group_norm
from ferbench.models.profile import count_parameters


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "size_out"),
    [(1, 1, 1, 12), (3, 1, 1, 12), (5, 1, 1, 12), (3, 2, 1, 6), (3, 1, 2, 12), (5, 2, 3, 6), (3, 2, 1, 6)],
)
def test_default_padding_keeps_the_size_for_odd_kernels(kernel: int, stride: int, dilation: int, size_out: int) -> None:
    layer = ConvNormAct(4, 8, kernel, stride, dilation=dilation)
    assert layer(torch.randn(2, 4, 12, 12)).shape == (2, 8, size_out, size_out)
    assert layer[0].padding == (dilation * (kernel // 2),) * 2


def test_explicit_padding_is_used() -> None:
    assert ConvNormAct(1, 4, 3, padding=0)(torch.randn(1, 1, 10, 10)).shape == (1, 4, 8, 8)


def test_norm_and_act_are_parameters_called_with_the_output_width() -> None:
    widths: list[int] = []

    def norm(channels: int) -> nn.Module:
        widths.append(channels)
        return nn.GroupNorm(2, channels)

    layer = ConvNormAct(3, 6, 3, norm_layer=norm, act_layer=nn.Hardswish)
    assert widths == [6]
    assert [type(m) for m in layer] == [nn.Conv2d, nn.GroupNorm, nn.Hardswish]
    assert layer[0].bias is None  # the norm's shift stands in for it


def test_defaults_are_bias_free_conv_batchnorm_inplace_relu() -> None:
    layer = ConvNormAct(3, 6)
    assert [type(m) for m in layer] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert layer[0].kernel_size == (1, 1) and layer[0].bias is None and layer[2].inplace


def test_none_leaves_the_norm_or_the_act_out_and_keys_stay_positional() -> None:
    assert [type(m) for m in ConvNormAct(3, 6, act_layer=None)] == [nn.Conv2d, nn.BatchNorm2d]
    assert [type(m) for m in ConvNormAct(3, 6, norm_layer=None, bias=True)] == [nn.Conv2d, nn.ReLU]
    assert list(ConvNormAct(3, 6).state_dict()) == [
        "0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
    ]  # fmt: skip
    assert ConvNormAct(3, 6, norm_layer=None, bias=True)[0].bias.shape == (6,)


def test_groups_and_partial_norms() -> None:
    layer = ConvNormAct(8, 8, 3, groups=8, norm_layer=partial(nn.BatchNorm2d, eps=1e-3), act_layer=None)
    assert layer[0].weight.shape == (8, 1, 3, 3) and layer[1].eps == 1e-3


@pytest.mark.parametrize(("channels", "groups"), [(16, GN_GROUPS), (200, 8), (12, 4), (3, 1)])
def test_group_norm_shrinks_its_groups_to_divide_the_width(channels: int, groups: int) -> None:
    norm = group_norm(channels)
    assert (norm.num_groups, norm.num_channels, norm.eps) == (groups, channels, 1e-5)
    assert group_norm(24, groups=16, eps=1e-3).num_groups == 8 and group_norm(24, eps=1e-3).eps == 1e-3


# --- the models built of it ----------------------------------------------------------------------------------

# (overrides, classes) -> parameters, built as the runner builds them; the last four as the gallery's run records
# have them (results/gallery/runs/*/metrics.csv; the shufflecsp one also in results/gallery/tables/shufflecsp/table3)
PARAMS = [
    (("model=simplecnn",), 7, 390_119),
    (("model=amdcnn",), 7, 1_602_636),
    (("model=amdcnn", "attn=mcbam"), 7, 1_613_808),
    (("model=amdcnn", "model.residual_kernel=1"), 7, 1_254_476),
    (("model=lightvgg",), 7, 1_687_751),
    (("model=lightvgg", "model.first_conv_separable=true"), 7, 1_687_250),
    (("model=mnv3simam", "attn=simam"), 7, 2_735_207),
    (("model=mnv3simam", "attn=se", "model.norm=bn", "model.shortcut_dilation=false"), 7, 3_074_751),
    (("model=yoloxnano",), 7, 810_535),
    (("model=yoloxnano", "attn=cbam", "model.norm=bn"), 7, 821_581),
    (("model=yoloxnano_det",), 7, 897_924),
    (("model=amdcnn", "attn=mcbam", "loss=am_softmax"), 7, 1_613_780),
    (("model=lightvgg", "attn=csa"), 6, 1_687_276),
    (("model=shufflecsp",), 7, 1_901_754),
    (("model=shufflecsp", "model.groups=1", "model.use_sa=false", "model.use_ca=false"), 7, 4_532_839),
]


@pytest.mark.parametrize(("overrides", "classes", "expected"), PARAMS, ids=[" ".join(o) for o, _, _ in PARAMS])
def test_parameter_counts(make_cfg: Callable[..., DictConfig], overrides: tuple, classes: int, expected: int) -> None:
    assert count_parameters(build_model(make_cfg(*overrides), classes)) == expected


# keys that recorded checkpoints (fold_<k>/best.ckpt, model.init's warm start) load by: conv-norm-act layers sit
# flat where the models had them flat (lightvgg's separable convs: 0-5; simplecnn's blocks: 0-4)
KEYS = {
    "simplecnn": ["features.0.0.weight", "features.0.1.running_mean", "features.3.0.weight"],
    "amdcnn": ["sfem.2.1.weight", "dfems.0.block.2.0.weight", "dfems.3.residual.1.bias", "aux.0.features.0.1.bias"],
    "lightvgg": ["features.0.0.weight", "features.1.3.weight", "features.1.4.running_mean"],
    "mnv3simam": ["stem.1.weight", "blocks.0.shortcut.0.1.weight", "blocks.1.body.1.0.weight", "blocks.15.0.weight"],
    "shufflecsp": ["stem.1.running_mean", "csp1.dense.1.1.weight", "csp6.partial.0.weight", "csp6.mix.1.bias"],
    "yoloxnano": ["backbone.stem.conv.0.weight", "backbone.dark2.0.1.1.weight", "neck.bu_conv1.0.0.weight"],
}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_state_dict_keys_of_recorded_runs(make_cfg: Callable[..., DictConfig], name: str) -> None:
    keys = build_model(make_cfg(f"model={name}"), 7).state_dict().keys()
    assert set(KEYS[name]) <= keys
