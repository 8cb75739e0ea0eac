"""The detector's LightningModule: fits with YOLOX's loss (``simota.yolox_loss``), tests with mAP, recall, F1 and
the face confusion; the same per-epoch history and rules as every ferbench module."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from ferbench.models.profile import frames_per_second
from ferbench.models.yoloxnano_det import DetectionPipeline, postprocess
from ferbench.training.detection.metrics import (
    SCORE_THRESHOLD,
    as_target_dicts,
    face_confusion,
    matched_counts,
    recall_precision_f1,
)
from ferbench.training.detection.simota import DetectionLoss, LossOptions, yolox_loss
from ferbench.training.lightning.module import HistoryModule
from ferbench.training.metrics import ImageMean
from ferbench.training.mixup import mixes


class DetectionModule(HistoryModule):
    """Fits a detector with ``yolox_loss``; tests with torchmetrics' mAP plus recall / F1 at a score threshold.

    Keeps the same per-epoch history as ``FERModule`` (train/val loss, lr, seconds; saved in checkpoints) so
    resume, early stopping on ``val_loss`` and the run record work unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        optim_cfg: Any,
        num_classes: int,
        max_epochs: int,
        input_size: int,
        in_chans: int = 3,
        fps_seconds: float = 2.0,
        no_aug_epochs: int = 0,
        loss_options: LossOptions | None = None,
    ) -> None:
        super().__init__()
        self.no_aug_epochs, self.loss_options = no_aug_epochs, loss_options or LossOptions()
        self.model = model
        self.optim_cfg = optim_cfg
        self.num_classes = num_classes
        self.max_epochs = max_epochs
        self.input_size, self.in_chans, self.fps_seconds = input_size, in_chans, fps_seconds
        self.train_loss, self.val_loss = ImageMean(), ImageMean()
        self.test_metrics = nn.ModuleDict({"map": MeanAveragePrecision(box_format="xyxy", iou_type="bbox")})
        self.test_results: dict[str, Any] = {}
        self._test_preds: list[dict[str, torch.Tensor]] = []
        self._test_targets: list[dict[str, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, x: torch.Tensor, targets: torch.Tensor) -> DetectionLoss:
        outputs = self.model(x)
        priors = self.model.priors(x.shape[-1], x.device) if x.shape[-1] == x.shape[-2] else None
        if priors is None or len(priors) != outputs.shape[1]:
            raise ValueError(f"detector input must be square, got {tuple(x.shape[-2:])}")
        return yolox_loss(outputs, targets, priors, self.loss_options)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, targets = batch
        loss = self._loss(x, targets)
        self.watch_loss(loss.total, batch_idx)
        self.train_loss.update(loss.total.detach() * len(x), len(x))
        return loss.total

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, targets = batch
        self.val_loss.update(self._loss(x, targets).total * len(x), len(x))

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_count:
            self.log("val_loss", self.val_loss.compute(), prog_bar=True, sync_dist=False, logger=False)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._switch_mixing(len(self.history))  # a resumed fit's first batch is drawn before its epoch starts

    def on_train_epoch_start(self) -> None:
        self._switch_mixing(self.current_epoch)

    def _switch_mixing(self, epoch: int) -> None:
        """Mosaic and mix-up off for the last ``no_aug_epochs`` epochs (YOLOX's recipe)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.no_aug_epochs and datamodule is not None and hasattr(datamodule, "set_mixing"):
            datamodule.set_mixing(mixes(epoch, self.max_epochs, self.no_aug_epochs))

    def on_train_epoch_end(self) -> None:
        validated = bool(self.val_loss.update_count)
        row = self.end_epoch(self.train_loss.compute(), val_loss=self.val_loss.compute() if validated else None)
        self.log("train_loss", row["train_loss"], prog_bar=True, logger=False)
        for metric in (self.train_loss, self.val_loss):
            metric.reset()

    def on_test_epoch_start(self) -> None:
        self._test_preds, self._test_targets = [], []

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, targets = batch
        preds = postprocess(self.model(x).float())
        truth = as_target_dicts(targets)
        self.test_metrics["map"].update(preds, truth)
        self._test_preds += [{k: v.cpu() for k, v in p.items()} for p in preds]
        self._test_targets += [{k: v.cpu() for k, v in t.items()} for t in truth]

    def on_test_epoch_end(self) -> None:
        ap = self.test_metrics["map"].compute()
        self.test_metrics["map"].reset()
        counts = matched_counts(self._test_preds, self._test_targets, self.num_classes)
        confusion, missed = face_confusion(self._test_preds, self._test_targets, self.num_classes)
        faces = int(sum(len(t["labels"]) > 0 for t in self._test_targets))
        self.test_results = {
            "map50": float(ap["map_50"]),
            "map50_95": float(ap["map"]),
            **recall_precision_f1(counts),
            # the expression named for each face by the best detection on it, over all faces (a miss is wrong)
            "accuracy": float(confusion.diag().sum()) / max(faces, 1),
            "faces_missed": missed,
            "fps": self._frames_per_second(),
            "confusion": confusion,
        }

    def _frames_per_second(self) -> float:
        """Batch 1, network + decoding + NMS, on the device the test ran on (warm-up excluded), as the paper's
        frame rate. Measured here because Lightning moves the module back to the CPU after testing."""
        pipeline = DetectionPipeline(self.model)
        fps = frames_per_second(pipeline, self.input_size, self.in_chans, str(self.device), self.fps_seconds)
        self.model.eval()
        return round(fps, 1)

    def test_row(self, classes: list[str]) -> dict[str, float]:
        """The record's metric columns (the confusion matrix is written on its own)."""
        row = {k: v for k, v in self.test_results.items() if k != "confusion"}
        row["score_threshold"] = SCORE_THRESHOLD
        row["size_kb"] = math.ceil(sum(p.numel() for p in self.model.parameters()) * 4 / 1024)
        matrix = self.test_results["confusion"]
        totals = matrix.sum(1).clamp(min=1)
        row.update({f"recall_{c}": float(matrix[i, i] / totals[i]) for i, c in enumerate(classes)})
        return row
