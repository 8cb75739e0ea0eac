"""The one LightningModule: any model, any loss, optimiser and scheduler from config."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ferbench.errors import RunFailed
from ferbench.training.metrics import ImageMean, flatten, test_metrics
from ferbench.training.mixup import MixUp, mix_batch, mixed_loss, mixes
from ferbench.training.optim import lightning_optimizers
from ferbench.training.rules import BadLoss, LossWatch, StoppingRule, close_epoch


def _correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many images' top class is right: over the epoch's images, the accuracy."""
    return (out.argmax(dim=1) == y).sum()


class HistoryModule(pl.LightningModule):
    """What every ferbench LightningModule shares: the optimiser from ``optim_cfg`` over ``max_epochs``, its
    per-epoch ``history`` saved in and restored from checkpoints (so a resumed run's history is whole), and the
    rules of ``training/rules.py``: the step-loss watch and the epoch's end with the stopping rule."""

    optim_cfg: Any
    max_epochs: int

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, float]] = []
        self.loss_watch = LossWatch()
        self.stopping = StoppingRule(patience=0)  # build_trainer's ValLossStopping hands over the run's own

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

    def on_fit_start(self) -> None:
        self._epoch_mark = time.perf_counter()

    def watch_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """A training step's loss to the shared watch: a NaN or infinite one fails the run."""
        self._fail_on(self.loss_watch.add(loss, batch_idx))

    def _fail_on(self, bad: list[BadLoss]) -> None:
        if bad:
            raise RunFailed(bad[0].reason(self.current_epoch + 1))

    def end_epoch(self, train_loss: torch.Tensor, **values: torch.Tensor | None) -> dict[str, float]:
        """The epoch's row and the stopping rule's verdict (``rules.close_epoch``); ``values``: ``train_acc``,
        ``val_loss``, ``val_acc`` where the loop has them."""
        self._fail_on(self.loss_watch.check())
        row = close_epoch(
            self.history,
            self.stopping,
            self.loggers,
            self.current_epoch + 1,
            # wall seconds of this epoch (training + validation): kept in the history, which checkpoints carry,
            # so a resumed run's total is still the sum over every epoch it ran
            self._seconds_since_last_epoch(),
            float(train_loss),
            self.epoch_lr,
            **{k: None if v is None else float(v) for k, v in values.items()},
        )
        if self.stopping.stopped:
            self.trainer.should_stop = True
        return row

    def _seconds_since_last_epoch(self) -> float:
        now = time.perf_counter()
        seconds, self._epoch_mark = now - getattr(self, "_epoch_mark", now), now
        return seconds


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
        # Per-image means of loss and of correctness (= accuracy over images, as MulticlassAccuracy(average="micro")):
        # no NaN check, argument validation or host-made tensor per step (each a device sync on a GPU).
        self.train_loss, self.val_loss = ImageMean(), ImageMean()
        self.train_acc, self.val_acc = ImageMean(), ImageMean()
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
        self.watch_loss(loss, batch_idx)
        self.train_loss.update(loss.detach() * len(y), len(y))
        self.train_acc.update(_correct(out.detach(), y), len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)
        self.val_loss.update(self.loss(out, y) * len(y), len(y))
        self.val_acc.update(_correct(out, y), len(y))

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_count:
            self.log("val_loss", self.val_loss.compute(), prog_bar=True, sync_dist=False, logger=False)
            self.log("val_acc", self.val_acc.compute(), prog_bar=True, sync_dist=False, logger=False)

    def on_train_epoch_end(self) -> None:
        validated = bool(self.val_loss.update_count)
        row = self.end_epoch(
            self.train_loss.compute(),
            train_acc=self.train_acc.compute(),
            val_loss=self.val_loss.compute() if validated else None,
            val_acc=self.val_acc.compute() if validated else None,
        )
        self.log("train_acc", row["train_acc"], prog_bar=True, logger=False)
        for metric in (self.train_loss, self.train_acc, self.val_loss, self.val_acc):
            metric.reset()

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

    def test_row(self, classes: list[str]) -> dict[str, float]:
        """The record's metric columns from the last test (the confusion matrix is written on its own)."""
        return flatten(self.test_results, classes)
