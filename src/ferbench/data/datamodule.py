"""The LightningDataModule: cached uint8 images in memory, a fold's indices, augmentation on train only."""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ferbench.data.splits import Fold
from ferbench.data.transforms import to_tensor


class ImageArrayDataset(Dataset):
    """Rows ``indices`` of a uint8 N x H x W x C array; augments each image when given a pipeline."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, augment: A.Compose | None):
        self.images, self.labels, self.indices, self.augment = images, labels, indices, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        row = self.indices[i]
        image = self.images[row]
        if self.augment is not None:
            image = self.augment(image=image)["image"]
            if image.ndim == 2:  # some transforms drop a single channel axis
                image = image[:, :, None]
        return np.ascontiguousarray(image), int(self.labels[row])


def collate_uint8(mean: float, std: float) -> Callable:
    """Stack uint8 images first, normalise the whole batch at once (cheaper than per image)."""

    def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = np.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        return to_tensor(images, mean, std), labels

    return collate


class FERDataModule(pl.LightningDataModule):
    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        fold: Fold,
        augment: A.Compose | None,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        mean: float = 0.5,
        std: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.images, self.labels, self.fold, self.augment = images, labels, fold, augment
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.collate = collate_uint8(mean, std)
        self.seed = seed

    def _loader(self, indices: np.ndarray, train: bool) -> DataLoader:
        dataset = ImageArrayDataset(self.images, self.labels, indices, self.augment if train else None)
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(indices) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.fold.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.fold.val, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.fold.test, train=False)
