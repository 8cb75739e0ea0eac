"""Augmentation pipelines (albumentations, from ``conf/aug``), their batched on-device twins, and normalisation.

``BatchAugment`` runs the same ``aug.train`` pipeline on a whole batch on the training device (``trainer.gpu_augment``),
drawing every parameter per image from the distributions albumentations draws from. Consecutive geometric
transforms are composed into one 3x3 matrix per image and applied with one ``grid_sample`` (bilinear, zero
border, the pixel-centre convention of OpenCV), so a chain of warps is interpolated once, not once per step.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from ferbench.errors import ConfigError


class Pipeline(A.Compose):
    """A Compose whose ``set_random_seed`` gives its transforms one shared random stream.

    albumentations' own seeds every transform with the *same* seed: each then draws the same numbers, so
    HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) fire together or not at all (never one alone), and every
    ``p`` is correlated with the others. Unseeded, albumentations shares one stream; seeded, so do we.
    """

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))


def build_augmentation(steps: Sequence[Any]) -> A.Compose | None:
    """``aug.train`` (a list of ``_target_`` specs) -> one Compose; an empty list -> None (no work)."""
    if not steps:
        return None
    try:
        return Pipeline([instantiate(step) for step in steps])
    except Exception as exc:  # hydra wraps import and argument errors alike
        raise ConfigError(f"aug.train could not be built: {exc}") from None


def to_tensor(images: np.ndarray | torch.Tensor, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """uint8 N x H x W x C (or H x W x C) -> float N x C x H x W (or C x H x W), ``(x/255 - mean)/std``."""
    tensor = torch.as_tensor(images)
    tensor = tensor.movedim(-1, -3).float().div_(255.0)
    return tensor.sub_(mean).div_(std)


def normalize_batch(
    images: torch.Tensor,
    mean: float = 0.5,
    std: float = 0.5,
    channels_last: bool = False,
    augment: BatchAugment | None = None,
) -> torch.Tensor:
    """uint8 N x H x W x C on the device -> float N x C x H x W, augmented (in [0, 1]) then ``(x - mean)/std``.

    The same arithmetic as ``to_tensor``; the memory format is chosen here, where the float copy is made anyway.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = images.permute(0, 3, 1, 2).to(dtype=torch.float32, memory_format=layout).div_(255.0)
    if augment is not None:
        x = augment(x).contiguous(memory_format=layout)
    return x.sub_(mean).div_(std)


# ---------------------------------------------------------------------------------------------- batched ops

Size = tuple[int, int]
Geometric = Callable[[int, Size, torch.device], tuple[torch.Tensor, Size]]
"""(batch, (h, w), device) -> (N x 3 x 3 forward maps from input to output pixel coordinates, output size)."""
Photometric = Callable[[torch.Tensor], torch.Tensor]


def _uniform(n: int, bounds: Sequence[float], device: torch.device) -> torch.Tensor:
    low, high = float(bounds[0]), float(bounds[1])
    return torch.rand(n, device=device) * (high - low) + low


def _applied(n: int, p: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) < p


def _eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(n, 3, 3).clone()


def _where(mask: torch.Tensor, matrices: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    return torch.where(mask[:, None, None], matrices, _eye(n, device))


def _flip(p: float, axis: int) -> Geometric:
    def matrices(n: int, size: Size, device: torch.device) -> tuple[torch.Tensor, Size]:
        m = _eye(n, device)
        m[:, axis, axis] = -1.0
        m[:, axis, 2] = size[1 - axis] - 1  # x' = (w - 1) - x: pixel centres onto pixel centres
        return _where(_applied(n, p, device), m, n, device), size

    return matrices


def _affine(t: A.Affine) -> Geometric:
    """``create_affine_transformation_matrix`` of albumentations, per image; translations in whole pixels."""

    def matrices(n: int, size: Size, device: torch.device) -> tuple[torch.Tensor, Size]:
        h, w = size
        if t.translate_px is not None:
            tx = torch.floor(_uniform(n, (t.translate_px["x"][0], t.translate_px["x"][1] + 1), device))
            ty = torch.floor(_uniform(n, (t.translate_px["y"][0], t.translate_px["y"][1] + 1), device))
        else:
            tx = torch.trunc(_uniform(n, t.translate_percent["x"], device) * w)
            ty = torch.trunc(_uniform(n, t.translate_percent["y"], device) * h)
        shear_x = -torch.deg2rad(_uniform(n, t.shear["x"], device))
        shear_y = -torch.deg2rad(_uniform(n, t.shear["y"], device))
        scale_x = _uniform(n, t.scale["x"], device)
        scale_y = scale_x if t.keep_ratio else _uniform(n, t.scale["y"], device)
        angle = torch.deg2rad(torch.remainder(_uniform(n, t.rotate, device), 360.0))
        cx, cy = w / 2 - 0.5, h / 2 - 0.5
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = _eye(n, device)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, sin, -sin, cos
        shear = _eye(n, device)
        shear[:, 0, 1], shear[:, 1, 0] = torch.tan(shear_x), torch.tan(shear_y)
        scale = _eye(n, device)
        scale[:, 0, 0], scale[:, 1, 1] = scale_x, scale_y
        to_origin, back = _eye(n, device), _eye(n, device)
        to_origin[:, 0, 2], to_origin[:, 1, 2] = -cx, -cy
        back[:, 0, 2], back[:, 1, 2] = cx + tx, cy + ty
        m = back @ shear @ rot @ scale @ to_origin
        return _where(_applied(n, t.p, device), m, n, device), size

    return matrices


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched ``cv2.getPerspectiveTransform``: N x 4 x 2 source and target corners -> N x 3 x 3."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)
    solution = torch.linalg.solve(system, torch.cat([u, v], dim=1))
    return torch.cat([solution, torch.ones(n, 1, device=src.device)], dim=1).reshape(n, 3, 3)


def _order_points(points: torch.Tensor) -> torch.Tensor:
    """``order_points`` of albumentations: the two leftmost are tl/bl by y, the two rightmost tr/br."""
    order = torch.argsort(points[..., 0], dim=1, stable=True)
    pts = torch.gather(points, 1, order[..., None].expand(-1, -1, 2))
    left, right = pts[:, :2], pts[:, 2:]
    left_swap = (left[:, 0, 1] >= left[:, 1, 1])[:, None]
    right_swap = (right[:, 0, 1] >= right[:, 1, 1])[:, None]
    tl = torch.where(left_swap, left[:, 1], left[:, 0])
    bl = torch.where(left_swap, left[:, 0], left[:, 1])
    tr = torch.where(right_swap, right[:, 1], right[:, 0])
    br = torch.where(right_swap, right[:, 0], right[:, 1])
    return torch.stack([tl, tr, br, bl], dim=1)


def _perspective(t: A.Perspective) -> Geometric:
    """Corners jittered by ``|N(0, s)| mod 0.32`` of the side, mapped onto the full image (``keep_size``)."""

    def matrices(n: int, size: Size, device: torch.device) -> tuple[torch.Tensor, Size]:
        h, w = size
        sigma = _uniform(n, t.scale, device)
        jitter = torch.remainder(torch.abs(torch.randn(n, 4, 2, device=device) * sigma[:, None, None]), 0.32)
        corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], device=device)
        inward = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], device=device)
        points = (corners + inward * jitter) * torch.tensor([w, h], dtype=torch.float32, device=device)
        points = _order_points(points)
        tl, tr, br, bl = points.unbind(1)
        max_w = torch.floor(torch.maximum((tr - tl).norm(dim=1), (br - bl).norm(dim=1)).clamp(min=2))
        max_h = torch.floor(torch.maximum((br - tr).norm(dim=1), (bl - tl).norm(dim=1)).clamp(min=2))
        target = torch.tensor([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]], device=device).expand(n, 4, 2)
        m = _homography(points, target)
        rescale = _eye(n, device)
        rescale[:, 0, 0], rescale[:, 1, 1] = w / max_w, h / max_h
        return _where(_applied(n, t.p, device), rescale @ m, n, device), size

    return matrices


def _resize(offset_x: torch.Tensor, offset_y: torch.Tensor, crop: tuple[torch.Tensor, torch.Tensor], out: Size):
    """Forward map of "shift by offset, then ``cv2.resize`` a crop_w x crop_h image to out" (half-pixel centres)."""
    n = offset_x.shape[0]
    crop_w, crop_h = crop
    m = _eye(n, offset_x.device)
    m[:, 0, 0], m[:, 1, 1] = out[1] / crop_w, out[0] / crop_h
    m[:, 0, 2] = (offset_x + 0.5) * out[1] / crop_w - 0.5
    m[:, 1, 2] = (offset_y + 0.5) * out[0] / crop_h - 0.5
    return m


def _crop_and_pad(t: A.CropAndPad) -> Geometric:
    """Per side a fraction (< 0 crops, > 0 pads with zeros), whole pixels, then resized back to the input size."""

    def matrices(n: int, size: Size, device: torch.device) -> tuple[torch.Tensor, Size]:
        h, w = size
        percent = t.percent
        if isinstance(percent, float | int):
            sides = torch.full((n, 4), float(percent), device=device)
        elif t.sample_independently:
            sides = torch.stack([_uniform(n, percent, device) for _ in range(4)], dim=1)
        else:
            sides = _uniform(n, percent, device)[:, None].expand(n, 4)
        extent = torch.tensor([h, w, h, w], dtype=torch.float32, device=device)
        top, right, bottom, left = torch.trunc(sides * extent).unbind(1)  # pixels: + pad, - crop
        m = _resize(left, top, (w + left + right, h + top + bottom), size)
        return _where(_applied(n, t.p, device), m, n, device), size

    return matrices


def _random_resized_crop(t: A.RandomResizedCrop, attempts: int = 10) -> Geometric:
    """Area and log-ratio drawn as albumentations does (10 tries, then the whole or a centre crop), resized."""

    def matrices(n: int, size: Size, device: torch.device) -> tuple[torch.Tensor, Size]:
        h, w = size
        out = (int(t.size[0]), int(t.size[1]))
        if t.p < 1 and out != size:
            raise ConfigError(f"trainer.gpu_augment: RandomResizedCrop(p={t.p}) to {out} of {size} images")
        area = _uniform(n * attempts, (t.scale[0] * h * w, t.scale[1] * h * w), device).reshape(n, attempts)
        ratio = torch.exp(_uniform(n * attempts, (math.log(t.ratio[0]), math.log(t.ratio[1])), device))
        ratio = ratio.reshape(n, attempts)
        cw, ch = torch.round(torch.sqrt(area * ratio)), torch.round(torch.sqrt(area / ratio))
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = torch.argmax(ok.int(), dim=1)
        found = ok.any(dim=1)
        pick = first[:, None]
        fallback_w, fallback_h = _fallback_crop(h, w, t.ratio)
        cw = torch.where(found, cw.gather(1, pick)[:, 0], float(fallback_w))
        ch = torch.where(found, ch.gather(1, pick)[:, 0], float(fallback_h))
        x0 = torch.where(found, torch.trunc((w - cw + 1) * torch.rand(n, device=device)), (w - cw) // 2)
        y0 = torch.where(found, torch.trunc((h - ch + 1) * torch.rand(n, device=device)), (h - ch) // 2)
        m = _resize(-x0, -y0, (cw, ch), out)
        identity = _resize(
            torch.zeros(n, device=device),
            torch.zeros(n, device=device),
            (torch.full((n,), float(w), device=device), torch.full((n,), float(h), device=device)),
            out,
        )
        return torch.where(_applied(n, t.p, device)[:, None, None], m, identity), out

    return matrices


def _fallback_crop(h: int, w: int, ratio: Sequence[float]) -> tuple[int, int]:
    in_ratio = w / h
    if in_ratio < ratio[0]:
        return w, round(w / ratio[0])
    if in_ratio > ratio[1]:
        return round(h * ratio[1]), h
    return w, h


def _brightness_contrast(t: A.RandomBrightnessContrast) -> Photometric:
    """``x * (1 + c) + b`` with ``b`` a fraction of the maximum (or of the image's mean), clipped to [0, 1]."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        n, cpu = x.shape[0], torch.device("cpu")
        alpha = 1.0 + _uniform(n, t.contrast_limit, cpu)
        beta = _uniform(n, t.brightness_limit, cpu)
        keep = ~_applied(n, t.p, cpu)
        alpha, beta = torch.where(keep, 1.0, alpha), torch.where(keep, 0.0, beta)
        alpha, beta = alpha.to(x.device, non_blocking=True), beta.to(x.device, non_blocking=True)
        if not t.brightness_by_max:
            beta = beta * x.mean(dim=(1, 2, 3))
        return (x * alpha[:, None, None, None] + beta[:, None, None, None]).clamp_(0.0, 1.0)

    return apply


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: Size, device: torch.device) -> torch.Tensor:
    """Homogeneous pixel-centre coordinates (x, y, 1) of an h x w image, 1 x hw x 3."""
    ys, xs = torch.meshgrid(
        torch.arange(size[0], dtype=torch.float32, device=device),
        torch.arange(size[1], dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)


def warp(x: torch.Tensor, forward: torch.Tensor, out: Size) -> torch.Tensor:
    """Resample N x C x H x W images through per-image forward maps (input -> output pixel coordinates; any device)."""
    n, _, h, w = x.shape
    inverse = torch.linalg.inv(forward).to(x.device, non_blocking=True)
    source = _pixel_grid(out, x.device) @ inverse.transpose(1, 2)  # N x (H'W') x 3
    source = source[..., :2] / source[..., 2:]
    scale = torch.tensor([w, h], dtype=torch.float32, device=x.device)
    grid = ((2 * source + 1) / scale - 1).reshape(n, out[0], out[1], 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class BatchAugment:
    """A batched, on-device version of an albumentations ``Compose``: float N x C x H x W in [0, 1] in and out."""

    def __init__(self, ops: list[tuple[str, Geometric | Photometric]]) -> None:
        self.ops = ops

    @classmethod
    def from_albumentations(cls, compose: A.Compose) -> BatchAugment:
        if compose.p < 1:
            raise ConfigError(f"trainer.gpu_augment: a Compose with p={compose.p} is not supported (needs p=1)")
        ops = []
        for transform in compose.transforms:
            kind, build = _DEVICE_OPS.get(type(transform), (None, None))
            if build is None:
                name = type(transform).__name__
                supported = ", ".join(sorted(k.__name__ for k in _DEVICE_OPS))
                raise ConfigError(
                    f"trainer.gpu_augment: albumentations.{name} has no batched version; "
                    f"supported: {supported} (or set trainer.gpu_augment=false)"
                )
            _check_options(transform)
            ops.append((kind, build(transform)))
        return cls(ops)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Parameters and matrices are drawn on the CPU (a few dozen tiny ops; on a GPU each would be a kernel
        # launch) and sent over once; only the resampling runs on the images' device.
        n, device = x.shape[0], torch.device("cpu")
        size: Size = (x.shape[2], x.shape[3])
        forward: torch.Tensor | None = None
        for kind, op in self.ops:
            if kind == "geometric":
                m, size = op(n, size, device)
                forward = m if forward is None else m @ forward
            else:
                if forward is not None:
                    x, forward = warp(x, forward, size), None
                x = op(x)
        return x if forward is None else warp(x, forward, size)


_DEVICE_OPS: dict[type, tuple[str, Callable[[Any], Geometric | Photometric]]] = {
    A.HorizontalFlip: ("geometric", lambda t: _flip(t.p, axis=0)),
    A.VerticalFlip: ("geometric", lambda t: _flip(t.p, axis=1)),
    A.Affine: ("geometric", _affine),
    A.ShiftScaleRotate: ("geometric", _affine),  # albumentations stores it as an Affine
    A.Perspective: ("geometric", _perspective),
    A.CropAndPad: ("geometric", _crop_and_pad),
    A.RandomResizedCrop: ("geometric", _random_resized_crop),
    A.RandomBrightnessContrast: ("photometric", _brightness_contrast),
}
"""albumentations class -> (kind, builder of its batched op from the instantiated transform)."""

_REQUIRED = {
    "border_mode": cv2.BORDER_CONSTANT,
    "fill": 0,
    "interpolation": cv2.INTER_LINEAR,
    "fit_output": False,
    "keep_size": True,
    "balanced_scale": False,
    "ensure_safe_range": False,
    "px": None,
    "area_for_downscale": None,
}
"""Options the batched ops implement only at these values (zero border, bilinear, same output size)."""


def _check_options(transform: Any) -> None:
    for key, expected in _REQUIRED.items():
        if hasattr(transform, key) and getattr(transform, key) != expected:
            name = type(transform).__name__
            raise ConfigError(
                f"trainer.gpu_augment: albumentations.{name}({key}={getattr(transform, key)!r}) is not supported "
                f"(the batched version needs {key}={expected!r})"
            )
