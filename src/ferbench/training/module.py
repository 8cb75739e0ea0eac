"""The one LightningModule: any model, any loss, optimiser and scheduler from config."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ferbench.errors import RunFailed
from ferbench.training.metrics import test_metrics
from ferbench.training.optim import build_optimizer, build_scheduler


class FERModule(pl.LightningModule):
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
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_metrics = test_metrics(num_classes)
        self.test_results: dict[str, torch.Tensor] = {}
        self.test_probs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.training and hasattr(self.model, "forward_with_aux"):
            return self.model.forward_with_aux(x)
        return self.model(x), []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out, aux = self._outputs(x)
        loss = self.loss(out, y) + sum((self.aux_weight * self.loss(a, y) for a in aux), torch.zeros(()))
        if not torch.isfinite(loss):
            raise RunFailed(f"loss became {loss.item()} at epoch {self.current_epoch + 1}, batch {batch_idx}")
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_acc.update(out.detach(), y)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)
        self.val_loss.update(self.loss(out, y), weight=len(y))
        self.val_acc.update(out, y)

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_count:
            self.log("val_loss", self.val_loss.compute(), prog_bar=True, sync_dist=False)
            self.log("val_acc", self.val_acc.compute(), prog_bar=True, sync_dist=False)

    def on_train_epoch_end(self) -> None:
        row = {
            "epoch": self.current_epoch + 1,
            "train_loss": float(self.train_loss.compute()),
            "train_acc": float(self.train_acc.compute()),
            "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"]),
        }
        if self.val_loss.update_count:
            row["val_loss"] = float(self.val_loss.compute())
            row["val_acc"] = float(self.val_acc.compute())
        self.history.append(row)
        self.log("train_acc", row["train_acc"], prog_bar=True)
        for metric in (self.train_loss, self.train_acc, self.val_loss, self.val_acc):
            metric.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        probs = torch.softmax(self.loss.to_logits(self.model(x)).float(), dim=1)
        self.test_metrics.update(probs, y)
        self.test_probs.append(probs.cpu())

    def on_test_epoch_end(self) -> None:
        self.test_results = {k: v.detach().cpu() for k, v in self.test_metrics.compute().items()}
        self.test_metrics.reset()

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.optim_cfg, params)
        scheduler = build_scheduler(self.optim_cfg, optimizer, self.max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ferbench_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("ferbench_history", []))
