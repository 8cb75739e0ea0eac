"""The LightningDataModule: cached uint8 images in memory, a fold's indices, augmentation on train only.

The loader hands over uint8 N x H x W x C batches (a quarter of float32's bytes to copy and pin); conversion,
normalisation, the memory format and, with ``gpu_augment``, the augmentation run on the training device in
``on_after_batch_transfer``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ferbench.data.splits import Fold
from ferbench.data.transforms import BatchAugment, normalize_batch
from ferbench.errors import ConfigError

MAX_AUTO_WORKERS = 4
"""Cached uint8 arrays need little work per image: a few processes keep a GPU fed even for 48x48 inputs."""


def resolve_num_workers(value: int | str, accelerated: bool) -> int:
    """``auto``: 0 on CPU (workers would take the cores the model trains on), else up to 4 of this run's cores.

    This run's cores are torch's thread count (``trainer.threads`` under a parallel launcher), less one for
    the main process.
    """
    if value != "auto":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"trainer.num_workers must be an integer >= 0 or 'auto', got {value!r}")
        return value
    if not accelerated:
        return 0
    cores = min(torch.get_num_threads(), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return max(1, min(MAX_AUTO_WORKERS, cores - 1))


def resolve_pin_memory(value: bool | str, accelerated: bool) -> bool:
    return accelerated if value == "auto" else bool(value)


class ImageArrayDataset(Dataset):
    """Rows ``indices`` of a uint8 N x H x W x C array; augments each image when given a pipeline.

    Keys are positions, or ``(position, seed)`` pairs from a ``BatchSeededSampler``: the pipeline is re-seeded
    whenever the seed changes, so what an image draws depends on its batch's seed only, not on which loader
    process handles it or for how many epochs that process has lived.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, augment: A.Compose | None):
        self.images, self.labels, self.indices, self.augment = images, labels, indices, augment
        self._seed: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, int]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        row = self.indices[i]
        image = self.images[row]
        if self.augment is not None:
            if seed is not None and seed != self._seed:
                self.augment.set_random_seed(seed)
                self._seed = seed
            image = self.augment(image=image)["image"]
            if image.ndim == 2:  # some transforms drop a single channel axis
                image = image[:, :, None]
        return image, int(self.labels[row])


class BatchSeededSampler(Sampler[tuple[int, int]]):
    """A shuffled epoch of ``(position, batch seed)`` pairs; one seed per ``batch_size`` consecutive pairs.

    The order and the seeds come from ``generator``, which ``EpochSeed`` re-seeds at every epoch: an epoch's
    images and their augmentations then depend on ``(seed, fold, epoch)`` alone, with or without loader
    processes, persistent or not, in a fresh run or one resumed from a checkpoint. Re-seeding albumentations
    costs more than augmenting one small image, hence once per batch rather than per image.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        base = int(torch.randint(0, 2**31, (1,), generator=self.generator))
        return ((i, (base + k // self.batch_size) % 2**32) for k, i in enumerate(order))


def seed_worker(worker_id: int) -> None:
    """Lightning's per-worker seeding of Python, NumPy and torch (augmentation is seeded per batch)."""
    from lightning_fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)


def collate_uint8(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the uint8 images into one array (no float conversion here: that runs on the device)."""
    images = np.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return torch.from_numpy(images), labels


def seeded_loader(
    datamodule, dataset: Dataset, train: bool, collate_fn, sampler: type[BatchSeededSampler] = BatchSeededSampler
) -> DataLoader:
    """The loader of a ferbench data module (classification or detection): shuffled and seeded per batch by a
    ``BatchSeededSampler`` when training, workers and pinning resolved for the device it trains on.

    ``datamodule`` gives ``batch_size``, ``num_workers``, ``pin_memory``, ``seed`` and ``_accelerated()``;
    ``sampler`` a ``BatchSeededSampler`` subclass whose keys the dataset reads.
    """
    accelerated = datamodule._accelerated()
    workers = resolve_num_workers(datamodule.num_workers, accelerated)
    batch_size, seed = datamodule.batch_size, datamodule.seed
    order = sampler(len(dataset), batch_size, torch.Generator().manual_seed(seed)) if train else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        drop_last=train and len(dataset) > batch_size,
        num_workers=workers,
        pin_memory=resolve_pin_memory(datamodule.pin_memory, accelerated),
        persistent_workers=workers > 0,
        collate_fn=collate_fn,
        # its own generator for the loader's worker base seed: drawn from the global RNG instead, a loader
        # with workers that persist (drawn once) and one without (drawn every epoch) would part ways
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=seed_worker if workers > 0 else None,
    )


class FoldDataModule(pl.LightningDataModule):
    """One fold's train / val / test loaders, each ``_loader(indices, train)``: what the classification and the
    detection data modules share."""

    fold: Fold

    def _loader(self, indices: np.ndarray, train: bool) -> DataLoader:
        raise NotImplementedError

    def _accelerated(self) -> bool:
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device.type != "cpu"
        return torch.cuda.is_available()

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.fold.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.fold.val, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.fold.test, train=False)


class FERDataModule(FoldDataModule):
    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        fold: Fold,
        augment: A.Compose | None,
        batch_size: int,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        mean: float = 0.5,
        std: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.images, self.labels, self.fold, self.augment = images, labels, fold, augment
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.mean, self.std = mean, std
        self.seed = seed
        self.channels_last = False
        self.device_augment: BatchAugment | None = None

    def augment_on_device(self) -> None:
        """Move ``augment`` from the loader (albumentations, per image) to the device (batched torch ops)."""
        if self.augment is not None:
            self.device_augment = BatchAugment.from_albumentations(self.augment)
            self.augment = None

    def _loader(self, indices: np.ndarray, train: bool) -> DataLoader:
        dataset = ImageArrayDataset(self.images, self.labels, indices, self.augment if train else None)
        return seeded_loader(self, dataset, train, collate_uint8)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        augment = self.device_augment if training else None
        return normalize_batch(images, self.mean, self.std, self.channels_last, augment), labels
