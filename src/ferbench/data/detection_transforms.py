"""Box-aware augmentation and the data module for detection: mosaic and mix-up (paper 000's input stage, as
YOLOX's), then the run's ``aug.train`` pipeline with its boxes carried along (albumentations ``bbox_params``).

Targets per image are (K, 5) float32 arrays: class, x1, y1, x2, y2 in input pixels. A batch is the uint8 images
(as ``FERDataModule``'s, normalised on the device) and a (B, M, 5) tensor padded with class -1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from ferbench.data.datamodule import BatchSeededSampler, FoldDataModule, seeded_loader
from ferbench.data.splits import Fold
from ferbench.data.transforms import Pipeline, normalize_batch
from ferbench.errors import ConfigError

MIN_VISIBLE = 0.25
"""A box cut by a mosaic window or crop is kept while at least this share of its area remains (YOLOX drops
boxes that became slivers)."""
MIN_SIDE = 2.0


@dataclass(frozen=True)
class MosaicMixup:
    """Probabilities and the mosaic's zoom range (``aug.detection`` in config; YOLOX uses 1.0 / 1.0 on COCO)."""

    mosaic: float = 0.0
    mixup: float = 0.0
    scale: tuple[float, float] = (0.5, 1.0)
    """The mosaic window's side is ``size / s`` of the 2x canvas for ``s`` drawn in this range."""

    @classmethod
    def from_config(cls, node: Any) -> MosaicMixup:
        if not node:
            return cls()
        options = dict(node)
        scale = tuple(options.pop("scale", (0.5, 1.0)))
        unknown = set(options) - {"mosaic", "mixup"}
        if unknown:
            raise ConfigError(f"aug.detection: unknown keys {sorted(unknown)} (expected mosaic, mixup, scale)")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(f"aug.detection.scale must be 0 < low <= high <= 1, got {list(scale)}")
        return cls(float(options.get("mosaic", 0.0)), float(options.get("mixup", 0.0)), (scale[0], scale[1]))


def keep_visible(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Rows of ``after`` (clipped boxes) that keep ``MIN_VISIBLE`` of ``before``'s area and ``MIN_SIDE`` px."""
    area = lambda b: (b[:, 3] - b[:, 1]).clip(0) * (b[:, 4] - b[:, 2]).clip(0)  # noqa: E731
    sides = np.minimum(after[:, 3] - after[:, 1], after[:, 4] - after[:, 2])
    return after[(area(after) >= MIN_VISIBLE * area(before).clip(1e-9)) & (sides >= MIN_SIDE)]


def paste(canvas: np.ndarray, image: np.ndarray, x0: int, y0: int) -> None:
    """``image`` at top-left (x0, y0) of ``canvas``, the parts outside it cut off."""
    h, w = image.shape[:2]
    cx1, cy1 = max(x0, 0), max(y0, 0)
    cx2, cy2 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1:cy2, cx1:cx2] = image[cy1 - y0 : cy2 - y0, cx1 - x0 : cx2 - x0]


def mosaic(
    images: Sequence[np.ndarray], targets: Sequence[np.ndarray], rng: np.random.Generator, scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Four images in the quadrants around a random centre of a 2x canvas, then a random square window of it
    containing the centre, resized back to one image's size (YOLOX's mosaic + its random zoom)."""
    size = images[0].shape[0]
    canvas = np.full((2 * size, 2 * size, images[0].shape[2]), 114, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(0.5 * size, 1.5 * size, 2))
    boxes = []
    for k, (image, target) in enumerate(zip(images, targets, strict=True)):
        x0, y0 = (xc - size if k % 2 == 0 else xc), (yc - size if k < 2 else yc)  # top-left, top-right, ...
        paste(canvas, image, x0, y0)
        boxes.append(target + np.array([0, x0, y0, x0, y0], dtype=np.float32))
    side = int(round(size / rng.uniform(*scale)))
    wx = int(rng.integers(max(0, xc - side), min(xc, 2 * size - side) + 1))
    wy = int(rng.integers(max(0, yc - side), min(yc, 2 * size - side) + 1))
    window = canvas[wy : wy + side, wx : wx + side]
    out = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    out = out.reshape(size, size, -1)
    before = np.concatenate(boxes) - np.array([0, wx, wy, wx, wy], dtype=np.float32)
    before[:, 1:] *= size / side
    after = before.copy()
    after[:, 1:] = after[:, 1:].clip(0, size)
    return out, keep_visible(before, after).astype(np.float32)


def mixup(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Half of each image, the boxes of both (YOLOX's mix-up blends 0.5 / 0.5)."""
    blended = (a[0].astype(np.float32) + b[0].astype(np.float32)) / 2
    return blended.round().astype(np.uint8), np.concatenate([a[1], b[1]])


def build_box_augmentation(steps: Sequence[Any]) -> A.Compose | None:
    """``aug.train`` with boxes carried (pascal_voc = x1, y1, x2, y2 pixels); transforms that cannot move boxes
    fail here, by name."""
    if not steps:
        return None
    try:
        params = A.BboxParams(format="pascal_voc", label_fields=["classes"], min_visibility=MIN_VISIBLE)
        return Pipeline([instantiate(step) for step in steps], bbox_params=params)
    except Exception as exc:
        raise ConfigError(f"aug.train could not be built for boxes: {exc}") from None


class DetectionDataset(Dataset):
    """Rows ``indices`` of a uint8 image array with their targets; training draws mosaic, mix-up, ``augment``.

    Keys are ``(position, batch seed, mixing)`` from ``MixingSampler`` (or plain positions): each image's draws
    come from ``(batch seed, position)``, whichever loader process handles it; ``mixing`` False skips mosaic and
    mix-up (the flag travels with the key, as YOLOX's batch sampler carries its mosaic switch, so loader
    processes that persist across epochs see it).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: list[np.ndarray],
        indices: np.ndarray,
        augment: A.Compose | None = None,
        mix: MosaicMixup = MosaicMixup(),
    ) -> None:
        self.images, self.targets, self.indices, self.augment, self.mix = images, targets, indices, augment, mix
        self.training = augment is not None or mix.mosaic > 0 or mix.mixup > 0

    def __len__(self) -> int:
        return len(self.indices)

    def _item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.indices[i]
        return np.asarray(self.images[row]), self.targets[row].reshape(-1, 5).astype(np.float32)

    def _mixed(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.mix.mosaic:
            picks = [i, *rng.integers(0, len(self), 3)]
            items = [self._item(int(k)) for k in picks]
            return mosaic([m for m, _ in items], [t for _, t in items], rng, self.mix.scale)
        return self._item(i)

    def __getitem__(self, key: int | tuple[int, int] | tuple[int, int, bool]) -> tuple[np.ndarray, np.ndarray]:
        i, seed, mixing = (*key, True)[:3] if isinstance(key, tuple) else (key, None, True)
        if not self.training:
            return self._item(i)
        rng = np.random.default_rng([seed if seed is not None else 0, i])
        image, target = self._mixed(i, rng) if mixing else self._item(i)
        if mixing and rng.random() < self.mix.mixup:
            image, target = mixup((image, target), self._mixed(int(rng.integers(0, len(self))), rng))
        if self.augment is not None:
            self.augment.set_random_seed(int(rng.integers(0, 2**31)))
            size = image.shape[0]
            boxes = target[:, 1:].clip(0, size)
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out = self.augment(image=image, bboxes=boxes[valid], classes=target[valid, 0])
            image = out["image"].reshape(size, size, -1)
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            target = np.concatenate([np.asarray(out["classes"], dtype=np.float32).reshape(-1, 1), boxes], axis=1)
        return image, target


class MixingSampler(BatchSeededSampler):
    """``BatchSeededSampler``'s keys with the mosaic / mix-up switch added: ``(position, batch seed, mixing)``.
    The switch is read as each key is drawn, so turning it off at an epoch's start holds for that epoch."""

    mixing: bool = True

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        return ((i, seed, self.mixing) for i, seed in super().__iter__())


def collate_boxes(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images stacked; targets padded to the batch's most boxes with class -1."""
    most = max(1, max(len(t) for _, t in batch))
    padded = np.full((len(batch), most, 5), -1.0, dtype=np.float32)
    for k, (_, t) in enumerate(batch):
        padded[k, : len(t)] = t
    return torch.from_numpy(np.stack([b[0] for b in batch])), torch.from_numpy(padded)


class DetectionDataModule(FoldDataModule):
    """``FERDataModule``'s loaders and device-side normalisation, with targets instead of labels."""

    def __init__(
        self,
        images: np.ndarray,
        targets: list[np.ndarray],
        fold: Fold,
        augment: A.Compose | None,
        mix: MosaicMixup,
        batch_size: int,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        mean: float = 0.5,
        std: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.images, self.targets, self.fold, self.augment, self.mix = images, targets, fold, augment, mix
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.mean, self.std, self.seed = mean, std, seed
        self.channels_last = False
        self.mixing = True
        self._train_sampler: MixingSampler | None = None

    def set_mixing(self, on: bool) -> None:
        """Mosaic and mix-up on or off from the next key drawn (``DetectionModule`` turns them off for the
        last ``aug.no_aug_epochs``)."""
        self.mixing = on
        if self._train_sampler is not None:
            self._train_sampler.mixing = on

    def augment_on_device(self) -> None:
        raise ConfigError("trainer.gpu_augment does not apply to detection (boxes are augmented with the images)")

    def _loader(self, indices: np.ndarray, train: bool) -> DataLoader:
        dataset = DetectionDataset(
            self.images, self.targets, indices, self.augment if train else None, self.mix if train else MosaicMixup()
        )
        loader = seeded_loader(self, dataset, train, collate_boxes, sampler=MixingSampler)
        if train:
            self._train_sampler = loader.sampler
            self._train_sampler.mixing = self.mixing
        return loader

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int):
        images, targets = batch
        return normalize_batch(images, self.mean, self.std, self.channels_last, None), targets
