"""The paths ``ferbench bench`` times per case: ferbench's own training and evaluation, a plain PyTorch
loop, the data path alone."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ferbench.bench.cases import NUM_CLASSES, PRECISION_DTYPES
from ferbench.bench.measure import PeakMemory, Setting, StepTimer, Window, synchronizer
from ferbench.data.splits import Fold
from ferbench.data.transforms import BatchAugment, build_augmentation, normalize_batch
from ferbench.errors import FerbenchError
from ferbench.factory import build_model, task_for
from ferbench.training.lightning.trainer import build_trainer

# ------------------------------------------------------------------------------------------------ ferbench


def _datamodule(s: Setting, fold: Fold):
    """The run's own data module for the case (the factory's), at the benchmark's batch size and loader keys."""
    task = task_for(s.cfg)
    options = dict(batch_size=s.batch_size, num_workers=s.num_workers, pin_memory=s.pin_memory)
    return task.datamodule(s.cfg, s.images, s.labels, fold, **options)


def ferbench_path(s: Setting, evaluate: bool = True, barrier: Callable[[], None] | None = None) -> dict:
    """Train (and test) through the task's LightningModule and data module and build_trainer's Trainer, as ``run``
    does."""
    cfg = s.cfg
    all_rows = np.arange(len(s.images))
    fold = Fold(0, all_rows, np.arange(0), all_rows)
    task = task_for(cfg)
    model, loss = task.model_and_loss(cfg, NUM_CLASSES, s.labels)
    module = task.module(cfg, model, loss, NUM_CLASSES)
    datamodule = _datamodule(s, fold)
    timer = StepTimer(s.schedule.warmup, s.total - 1, synchronizer(s.device), barrier)
    trainer = build_trainer(
        cfg,
        None,
        has_val=False,
        max_epochs=1,
        devices=1,
        limit_train_batches=s.total,
        limit_val_batches=0,
        limit_test_batches=s.total,
        callbacks=[timer],
    )
    memory = PeakMemory(s.device)
    memory.reset()
    trainer.fit(module, datamodule=datamodule)
    result = {
        "train_ips": s.timed_images / timer.train.seconds,
        "peak_mb": memory.peak_mb(),
        "params": sum(p.numel() for p in model.parameters()),
        "wall_start": timer.train.wall_start,
        "wall_end": timer.train.wall_end,
    }
    if evaluate:
        trainer.test(module, datamodule=datamodule, verbose=False)
        result["eval_ips"] = s.timed_images / timer.test.seconds
    return result


# ------------------------------------------------------------------------------------------------ plain loop


class PlainDataset(Dataset):
    """What one writes by hand: index the array, augment, hand back a uint8 tensor and the label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.augment is not None:
            image = self.augment(image=image)["image"]
            image = image[:, :, None] if image.ndim == 2 else image
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.labels[i])


def plain_path(s: Setting, evaluate: bool = True) -> dict:
    """The same training and evaluation as a hand-written loop, honouring the same ``trainer`` speed keys."""
    cfg, t, device = s.cfg, s.cfg.trainer, s.device
    torch.manual_seed(cfg.seed)
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    model = build_model(cfg, NUM_CLASSES).to(device=device, memory_format=layout)
    if t.compile:
        model.compile(mode=None if t.compile_mode == "default" else t.compile_mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    dtype = PRECISION_DTYPES.get(str(t.precision))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    augment = build_augmentation(cfg.aug.train)
    on_device = BatchAugment.from_albumentations(augment) if t.gpu_augment and augment is not None else None
    loader = DataLoader(
        PlainDataset(s.images, s.labels, None if on_device is not None else augment),
        batch_size=s.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=s.num_workers,
        pin_memory=s.pin_memory,
        persistent_workers=s.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    window = Window(synchronizer(device))
    memory = PeakMemory(device)
    memory.reset()
    model.train()
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = normalize_batch(x, 0.5, 0.5, t.channels_last, on_device)
        if i == s.schedule.warmup:
            window.open()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if i == s.total - 1:
            window.close()
            break
    result = {"train_ips": s.timed_images / window.seconds, "peak_mb": memory.peak_mb()}
    if evaluate:
        result["eval_ips"] = _plain_eval(s, model, layout, dtype)
    return result


def _plain_eval(s: Setting, model: torch.nn.Module, layout: torch.memory_format, dtype: torch.dtype | None) -> float:
    loader = DataLoader(
        PlainDataset(s.images, s.labels, None),
        batch_size=s.batch_size,
        num_workers=s.num_workers,
        pin_memory=s.pin_memory,
    )
    window = Window(synchronizer(s.device))
    model.eval()
    probs = []
    with torch.inference_mode(), torch.autocast(s.device.type, dtype=dtype, enabled=dtype is not None):
        for i, (x, _) in enumerate(loader):
            x = normalize_batch(x.to(s.device, non_blocking=True), 0.5, 0.5, s.cfg.trainer.channels_last)
            if i == s.schedule.warmup:
                window.open()
            probs.append(torch.softmax(model(x).float(), dim=1))
            if i == s.total - 1:
                torch.cat(probs).cpu()
                window.close()
                break
    return s.timed_images / window.seconds


# ------------------------------------------------------------------------------------------------ data path


def data_path(s: Setting) -> float:
    """images/s of ferbench's training loader alone: indexing, augmentation (unless on the device), collate."""
    all_rows = np.arange(len(s.images))
    datamodule = _datamodule(s, Fold(0, all_rows, np.arange(0), all_rows))
    if s.cfg.trainer.gpu_augment:
        datamodule.augment_on_device()
    start = None
    for i, _ in enumerate(datamodule.train_dataloader()):
        if i == s.schedule.warmup - 1:
            start = time.perf_counter()
        if i == s.total - 1:
            break
    if start is None:
        raise FerbenchError("the data-path measurement needs at least one warm-up step")
    return s.timed_images / (time.perf_counter() - start)


def device_augment_ips(s: Setting) -> float | None:
    """images/s of the batched on-device augmentation alone (``trainer.gpu_augment``), else None."""
    augment = build_augmentation(s.cfg.aug.train)
    if not s.cfg.trainer.gpu_augment or augment is None:
        return None
    on_device = BatchAugment.from_albumentations(augment)
    batch = torch.from_numpy(s.images[: s.batch_size]).to(s.device)
    window = Window(synchronizer(s.device))
    for i in range(s.total):
        if i == s.schedule.warmup:
            window.open()
        normalize_batch(batch, 0.5, 0.5, False, on_device)
    window.close()
    return s.timed_images / window.seconds
