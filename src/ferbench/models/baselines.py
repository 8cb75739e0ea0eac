"""Baselines the papers compare against, built by name from timm (torchvision where timm lacks one).

Nothing downloads: ``pretrained=False`` always; ``pretrained_path`` loads a local state dict (entries whose
shapes differ, e.g. a 1000-class classifier or a 3-channel stem for grey input, are left as initialised).
Baselines take no attention block; a head other than the linear one replaces their classifier.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision.models import shufflenet_v2_x1_0

from ferbench.attention import AttnFactory, NoAttention
from ferbench.errors import ConfigError
from ferbench.models.heads import HeadFactory, LinearHead
from ferbench.models.registry import MODELS
from ferbench.records import safe_load

log = logging.getLogger(__name__)

# ferbench name -> timm name. Xception: timm's ``legacy_xception`` is Chollet's original 36-conv network,
# the one paper 001 describes ("36 convolutional layers"); ``xception41/65/71`` are later aligned variants.
TIMM_BASELINES = {
    "vgg13": "vgg13",
    "vgg16": "vgg16",
    "mobilenetv2": "mobilenetv2_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "xception": "legacy_xception",
    "densenet121": "densenet121",
}


def reject_attention(attn_layer: AttnFactory, name: str, why: str = "is a baseline") -> None:
    """A model with no place for ``attn`` fails on any other than ``none``: never a silent run without it."""
    if not isinstance(attn_layer(8), NoAttention):
        raise ConfigError(f"model '{name}' {why} and takes no attention block; set attn=none")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local checkpoint (a state dict, or a dict holding one under ``state_dict``/``model``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.pretrained_path: {path} is not a file")
    state = safe_load.load_weights(path, "model.pretrained_path")  # weights-only: the file runs no code
    for key in ("state_dict", "model"):
        state = state.get(key, state) if isinstance(state, dict) else state
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise ConfigError(f"model.pretrained_path: no tensor in {path} fits the model (wrong architecture?)")
    model.load_state_dict(fits, strict=False)
    log.info("loaded %d of %d tensors from %s", len(fits), len(own), path)
    return model


class WithHead(nn.Module):
    """A classifier-less backbone (features, N x F) followed by ``head_layer``."""

    def __init__(self, backbone: nn.Module, in_features: int, num_classes: int, head_layer: HeadFactory) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head_layer(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def timm_model(
    num_classes: int,
    in_chans: int,
    arch: str,
    attn_layer: AttnFactory = NoAttention,
    head_layer: HeadFactory = LinearHead,
    pretrained_path: str | None = None,
    **kwargs,
) -> nn.Module:
    """Any timm model by name, from scratch or from a local weights file."""
    reject_attention(attn_layer, arch)
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except RuntimeError as exc:  # timm's "Unknown model (...)"
        raise ConfigError(f"model.arch: {exc}") from None
    if pretrained_path:
        load_weights(model, pretrained_path)
    if head_layer is LinearHead:
        return model
    model.reset_classifier(0)
    features = getattr(model, "head_hidden_size", None) or model.num_features
    return WithHead(model, features, num_classes, head_layer)


def shufflenetv2(
    num_classes: int,
    in_chans: int = 1,
    attn_layer: AttnFactory = NoAttention,
    head_layer: HeadFactory = LinearHead,
    pretrained_path: str | None = None,
) -> nn.Module:
    """torchvision's ShuffleNetV2 1.0x (timm has none); its first conv rebuilt for ``in_chans``."""
    reject_attention(attn_layer, "shufflenetv2")
    model = shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    old = model.conv1[0]
    model.conv1[0] = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    if pretrained_path:
        load_weights(model, pretrained_path)
    model.fc = head_layer(model.fc.in_features, num_classes)
    return model


MODELS.register("timm")(timm_model)
MODELS.register("shufflenetv2")(shufflenetv2)
for _name, _arch in TIMM_BASELINES.items():
    MODELS.register(_name)(partial(timm_model, arch=_arch))
