"""Live views of a run's epochs (``logger`` config group): TensorBoard, MLflow or W&B beside ferbench's own CSVs.

Every training loop writes the same epoch row (``rules.epoch_row``) to ``history.csv``; ``log_epoch`` sends that row
to the fold's logger too, so the solo, detection and packed paths show the same curves. The logger is where results
are watched, not what the experiment is: ``logger`` is not part of the run id. The packages are optional: a missing
one is a one-line error naming it, before any training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ferbench.config import LOGGER_PACKAGES, check_logger, logger_name
from ferbench.errors import ConfigError


def build_logger(cfg: Any, run_id: str, fold: int, fold_dir: Path):
    """The fold's Lightning logger, or None for ``logger=csv`` (ferbench's records are the CSVs)."""
    name = logger_name(cfg)
    if name == "csv":
        return None
    check_logger(cfg)
    from pytorch_lightning import loggers

    run_name = f"{run_id}-fold{fold}"
    if name == "tensorboard":
        return loggers.TensorBoardLogger(save_dir=str(fold_dir), name="logs", version="", default_hp_metric=False)
    if name == "mlflow":
        return loggers.MLFlowLogger(
            experiment_name=str(cfg.logger.experiment), run_name=run_name, tracking_uri=str(cfg.logger.tracking_uri)
        )
    if name == "wandb":
        return loggers.WandbLogger(
            name=run_name, project=str(cfg.logger.project), offline=bool(cfg.logger.offline), save_dir=str(fold_dir)
        )
    raise ConfigError(f"logger={name}: choose from csv, {', '.join(LOGGER_PACKAGES)}")


def log_epoch(loggers: Iterable[Any], row: Mapping[str, float]) -> None:
    """One epoch's history row to each logger, at step = the epoch number."""
    metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
    for logger in loggers:
        if logger is not None:
            logger.log_metrics(metrics, step=int(row["epoch"]))
