"""``synthetic``: procedurally drawn grey faces for the 7 basic expressions, no files needed.

Each expression is a distinct configuration of brows, eyes and mouth; pose, scale, position,
lighting, noise and the features' own shapes vary at random, so one epoch is not enough to learn
it, but a small CNN gets well above 80% in a few. Deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferbench.data.base import DATASETS, DataSource, sample_table
from ferbench.errors import ConfigError

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
_SUPER = 4  # draw at 4x, then downsample: smooth edges at any output size


@dataclass(frozen=True)
class Expression:
    """Nominal geometry of one expression, in units of the face radius."""

    brow_tilt: float  # + raises the inner ends (sad, fear), - lowers them (angry)
    brow_height: float  # distance above the eyes
    eye_open: float  # vertical eye radius
    mouth_curve: float  # + smile, - frown
    mouth_open: float  # vertical opening of the mouth
    mouth_width: float
    wrinkle: float = 0.0  # nose wrinkle strength (disgust)


EXPRESSIONS: dict[str, Expression] = {
    "angry": Expression(-0.10, 0.11, 0.045, -0.04, 0.0, 0.30),
    "disgust": Expression(-0.04, 0.10, 0.035, -0.08, 0.03, 0.26, wrinkle=1.0),
    "fear": Expression(0.08, 0.22, 0.085, -0.02, 0.07, 0.36),
    "happy": Expression(0.0, 0.17, 0.05, 0.13, 0.02, 0.42),
    "neutral": Expression(0.0, 0.16, 0.06, 0.0, 0.0, 0.32),
    "sad": Expression(0.09, 0.15, 0.05, -0.10, 0.0, 0.30),
    "surprise": Expression(0.0, 0.27, 0.095, 0.0, 0.17, 0.22),
}


def _jitter(rng: np.random.Generator, value: float, spread: float) -> float:
    return value + rng.normal(0.0, spread)


def draw_face(expr: Expression, size: int, rng: np.random.Generator, difficulty: float = 1.0) -> np.ndarray:
    """One uint8 ``size``x``size`` face; ``difficulty`` scales every random perturbation."""
    big = size * _SUPER
    d = difficulty
    canvas = np.full((big, big), rng.uniform(40, 110), dtype=np.float32)
    r = big * 0.36 * rng.uniform(1 - 0.12 * d, 1 + 0.08 * d)
    cx = big / 2 + rng.normal(0, 0.04 * big * d)
    cy = big / 2 + rng.normal(0, 0.04 * big * d)
    skin = rng.uniform(150, 215)
    ink = skin - rng.uniform(90, 130)
    cv2.ellipse(canvas, _pt(cx, cy), _pt(r * 0.82, r), 0, 0, 360, float(skin), -1, cv2.LINE_AA)
    thick = max(1, int(round(r * 0.05)))
    j = 0.5 * d  # per-feature jitter, as a fraction of the feature's own value

    eye_dx, eye_y = r * 0.36, cy - r * 0.18
    eye_open = max(0.015, _jitter(rng, expr.eye_open, 0.012 * j)) * r
    brow_y = eye_y - max(0.05, _jitter(rng, expr.brow_height, 0.025 * j)) * r
    tilt = _jitter(rng, expr.brow_tilt, 0.025 * j) * r
    for side in (-1, 1):
        ex = cx + side * eye_dx
        cv2.ellipse(canvas, _pt(ex, eye_y), _pt(r * 0.13, eye_open), 0, 0, 360, float(ink), -1, cv2.LINE_AA)
        inner, outer = ex - side * r * 0.16, ex + side * r * 0.16
        cv2.line(canvas, _pt(inner, brow_y - tilt), _pt(outer, brow_y + tilt), float(ink), thick, cv2.LINE_AA)

    if expr.wrinkle:
        for k in (-1, 0, 1):
            y = cy - r * 0.02 + k * r * 0.05
            cv2.line(canvas, _pt(cx - r * 0.09, y), _pt(cx + r * 0.09, y), float(ink), max(1, thick // 2))

    _draw_mouth(canvas, expr, cx, cy + r * 0.45, r, ink, thick, rng, j)

    angle = rng.normal(0, 9 * d)
    rot = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    canvas = cv2.warpAffine(canvas, rot, (big, big), borderMode=cv2.BORDER_REFLECT)
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    gx, gy = np.meshgrid(ramp, ramp)
    lighting = rng.uniform(0.7, 1.15) + 0.25 * d * (rng.normal() * gx + rng.normal() * gy)
    noisy = small * lighting + rng.normal(0, 8 * d, small.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _draw_mouth(canvas, expr, mx, my, r, ink, thick, rng, j) -> None:
    half = max(0.1, _jitter(rng, expr.mouth_width, 0.03 * j)) * r / 2
    curve = _jitter(rng, expr.mouth_curve, 0.025 * j) * r
    opening = max(0.0, _jitter(rng, expr.mouth_open, 0.015 * j)) * r
    xs = np.linspace(-half, half, 24)
    bend = curve * (1 - (xs / half) ** 2)  # image y grows downwards: a smile's middle sits low
    upper = np.stack([mx + xs, my + bend - opening / 2], axis=1)
    lower = np.stack([mx + xs[::-1], my + bend[::-1] + opening / 2], axis=1)
    if opening > r * 0.02:
        cv2.fillPoly(canvas, [np.round(np.concatenate([upper, lower])).astype(np.int32)], float(ink), cv2.LINE_AA)
    else:
        cv2.polylines(canvas, [np.round(upper).astype(np.int32)], False, float(ink), thick, cv2.LINE_AA)


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def generate(n: int, size: int, seed: int, difficulty: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` faces with balanced labels: (uint8 N x size x size, int64 labels)."""
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(len(CLASSES)), n)
    rng.shuffle(labels)
    exprs = [EXPRESSIONS[c] for c in CLASSES]
    images = np.stack([draw_face(exprs[y], size, rng, difficulty) for y in labels])
    return images, labels.astype(np.int64)


@DATASETS.register("synthetic")
def load_synthetic(
    root: Path | None = None,
    n_train: int = 2000,
    n_test: int = 500,
    image_size: int = 48,
    seed: int = 0,
    difficulty: float = 1.0,
) -> DataSource:
    """Train and test drawn from separate seeds, so the official split never shares a face."""
    for key, n in (("n_train", n_train), ("n_test", n_test)):
        if int(n) < 1:
            raise ConfigError(f"data.options.{key} must be at least 1 (images of the synthetic set), got {n}")
    train_x, train_y = generate(n_train, image_size, seed * 2 + 1, difficulty)
    test_x, test_y = generate(n_test, image_size, seed * 2 + 2, difficulty)
    labels = np.concatenate([train_y, test_y])
    split = ["train"] * n_train + ["test"] * n_test
    samples = sample_table({"label": y, "official_split": s} for y, s in zip(labels, split, strict=True))
    fingerprint = f"synthetic-{n_train}-{n_test}-{image_size}-{seed}-{difficulty}"
    return DataSource("synthetic", list(CLASSES), samples, np.concatenate([train_x, test_x]), fingerprint=fingerprint)
