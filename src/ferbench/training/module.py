"""The one LightningModule: any model, any loss, optimiser and scheduler from config."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ferbench.errors import RunFailed
from ferbench.training.loggers import log_epoch
from ferbench.training.metrics import ImageMean, test_metrics
from ferbench.training.mixup import MixUp, mix_batch, mixed_loss, mixes
from ferbench.training.optim import lightning_optimizers
from ferbench.training.rules import LOSS_CHECK_EVERY, epoch_row, nonfinite_loss


def _correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many images' top class is right: over the epoch's images, the accuracy."""
    return (out.argmax(dim=1) == y).sum()


class HistoryModule(pl.LightningModule):
    """What every ferbench LightningModule shares: the optimiser from ``optim_cfg`` over ``max_epochs``, and its
    per-epoch ``history`` saved in and restored from checkpoints (so a resumed run's history is whole)."""

    optim_cfg: Any
    max_epochs: int
    history: list[dict[str, float]]

    def configure_optimizers(self):
        return lightning_optimizers(self.optim_cfg, self, self.max_epochs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ferbench_history"] = list(self.history)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the lr this epoch trains at, for its history row: by the epoch-end hook Lightning has already stepped the
        # scheduler. Read per batch, not at the epoch's start, which a run resumed mid-epoch does not pass again
        self.epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("ferbench_history", []))


class FERModule(HistoryModule):
    """Trains ``model`` with ``loss``; auxiliary classifiers (``forward_with_aux``) are trained too.

    Keeps its own per-epoch history (saved in checkpoints, so a resumed run's history is whole).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optim_cfg: Any,
        num_classes: int,
        max_epochs: int,
        aux_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.optim_cfg = optim_cfg
        self.max_epochs = max_epochs
        self.aux_weight = aux_weight
        self.history: list[dict[str, float]] = []
        # Per-image means of loss and of correctness (= accuracy over images, as MulticlassAccuracy(average="micro")):
        # no NaN check, argument validation or host-made tensor per step (each a device sync on a GPU).
        self.train_loss, self.val_loss = ImageMean(), ImageMean()
        self.train_acc, self.val_acc = ImageMean(), ImageMean()
        self._pending_losses: list[tuple[int, torch.Tensor]] = []
        self.test_metrics = test_metrics(num_classes)
        self.test_results: dict[str, torch.Tensor] = {}
        self.test_probs: list[torch.Tensor] = []
        self._test_labels: list[torch.Tensor] = []
        self.mixup: MixUp | None = None  # aug.mixup, a batch transform (the factory sets it)
        self.no_aug_epochs = 0  # aug.no_aug_epochs: the last epochs without it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.training and hasattr(self.model, "forward_with_aux"):
            return self.model.forward_with_aux(x)
        return self.model(x), []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        mixup = self.mixup if mixes(self.current_epoch, self.max_epochs, self.no_aug_epochs) else None
        x, partner = mix_batch(x, y, mixup)
        out, aux = self._outputs(x)
        loss = mixed_loss(self.loss, out, y, partner)
        for a in aux:
            loss = loss + self.aux_weight * mixed_loss(self.loss, a, y, partner)
        self._watch_loss(loss.detach(), batch_idx)
        self.train_loss.update(loss.detach() * len(y), len(y))
        self.train_acc.update(_correct(out.detach(), y), len(y))
        return loss

    def _watch_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Fail on a NaN or infinite loss. Looking at a GPU loss stalls the host until the GPU catches up, so
        there losses are looked at together every ``LOSS_CHECK_EVERY`` steps (and at the epoch's end)."""
        self._pending_losses.append((batch_idx, loss))
        if loss.device.type == "cpu" or len(self._pending_losses) >= LOSS_CHECK_EVERY:
            self._check_losses()

    def _check_losses(self) -> None:
        pending, self._pending_losses = self._pending_losses, []
        if not pending:
            return
        losses = torch.stack([loss for _, loss in pending]).float().cpu()
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            first = int(bad[0, 0])
            batch_idx = pending[first][0]
            raise RunFailed(f"loss became {losses[first].item()} at epoch {self.current_epoch + 1}, batch {batch_idx}")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)
        self.val_loss.update(self.loss(out, y) * len(y), len(y))
        self.val_acc.update(_correct(out, y), len(y))

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_count:
            self.log("val_loss", self.val_loss.compute(), prog_bar=True, sync_dist=False, logger=False)
            self.log("val_acc", self.val_acc.compute(), prog_bar=True, sync_dist=False, logger=False)

    def on_fit_start(self) -> None:
        self._epoch_mark = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self._check_losses()
        validated = bool(self.val_loss.update_count)
        row = epoch_row(
            self.current_epoch + 1,
            # wall seconds of this epoch (training + validation): kept in the history, which checkpoints carry,
            # so a resumed run's total is still the sum over every epoch it ran
            self._seconds_since_last_epoch(),
            self.train_loss.compute(),
            self.epoch_lr,
            train_acc=self.train_acc.compute(),
            val_loss=self.val_loss.compute() if validated else None,
            val_acc=self.val_acc.compute() if validated else None,
        )
        if reason := nonfinite_loss(row):
            raise RunFailed(reason)
        self.history.append(row)
        log_epoch(self.loggers, row)
        self.log("train_acc", row["train_acc"], prog_bar=True, logger=False)
        for metric in (self.train_loss, self.train_acc, self.val_loss, self.val_acc):
            metric.reset()

    def _seconds_since_last_epoch(self) -> float:
        now = time.perf_counter()
        seconds, self._epoch_mark = now - getattr(self, "_epoch_mark", now), now
        return seconds

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        probs = torch.softmax(self.loss.to_logits(self.model(x)).float(), dim=1)
        self.test_probs.append(probs)  # kept on the device, metrics updated once at the end: per batch, their
        self._test_labels.append(y)  # validation and bincounts would each wait for the GPU

    def on_test_epoch_start(self) -> None:
        self.test_probs, self._test_labels = [], []

    def on_test_epoch_end(self) -> None:
        if self.test_probs:
            self.test_metrics.update(torch.cat(self.test_probs), torch.cat(self._test_labels))
        self.test_probs = [p.cpu() for p in self.test_probs]
        self._test_labels = []
        self.test_results = {k: v.detach().cpu() for k, v in self.test_metrics.compute().items()}
        self.test_metrics.reset()
