"""Live views of a run's epochs (``logger`` config group): TensorBoard, MLflow or W&B beside ferbench's own CSVs.

Every training loop writes the same epoch row (``rules.epoch_row``) to ``history.csv``; ``log_epoch`` sends that row
to the fold's logger too, so the solo, detection and packed paths show the same curves. Each fold is one logger run
(TensorBoard's ``<fold>/logs/``, an MLflow run, a W&B run), named ``<run_id>-fold<k>``, with the run's resolved
config, its run id and the fold as hyperparameters, and closed by ``close_logger`` when the fold ends. The logger is
where results are watched, not what the experiment is: ``logger`` is not part of the run id. The packages are
optional (the ``loggers`` extra): a missing one is a one-line error naming it, before any training.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from ferbench.config import LOGGER_PACKAGES, check_logger, logger_name
from ferbench.errors import ConfigError


def build_logger(cfg: Any, run_id: str, fold: int, fold_dir: Path):
    """The fold's Lightning logger, its hyperparameters logged, or None for ``logger=csv`` (ferbench's records are
    the CSVs)."""
    name = logger_name(cfg)
    if name == "csv":
        return None
    check_logger(cfg)
    from pytorch_lightning import loggers

    run_name = f"{run_id}-fold{fold}"
    if name == "tensorboard":
        logger = loggers.TensorBoardLogger(save_dir=str(fold_dir), name="logs", version="", default_hp_metric=False)
    elif name == "mlflow":
        logger = loggers.MLFlowLogger(
            experiment_name=str(cfg.logger.experiment), run_name=run_name, tracking_uri=tracking_uri(cfg)
        )
    elif name == "wandb":
        logger = loggers.WandbLogger(
            name=run_name,
            project=str(cfg.logger.project),
            offline=bool(cfg.logger.offline),
            save_dir=str(fold_dir),
            # a run of its own for each fold, even while another is open (the packed path trains folds side by
            # side): without it wandb.init hands back the open run, and every fold would log into the first one
            reinit="create_new",
        )
    else:
        raise ConfigError(f"logger={name}: choose from csv, {', '.join(LOGGER_PACKAGES)}")
    logger.log_hyperparams(hyperparameters(cfg, run_id, fold))
    return logger


def hyperparameters(cfg: Any, run_id: str, fold: int) -> dict[str, Any]:
    """What a logger run records as its parameters: the run id, the fold and the resolved config."""
    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {**config, "run_id": run_id, "fold": fold}


def tracking_uri(cfg: Any) -> str:
    """``logger.tracking_uri``; a local store (``file:`` or a plain path, relative ones to the working folder) as an
    absolute ``file://`` URI. MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set: a local
    store sets it for this process (where it is not set already), since it is the one store that needs no server
    and no database package."""
    uri = str(cfg.logger.tracking_uri)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return Path(parsed.path if parsed.scheme else uri).resolve().as_uri()


def close_logger(logger: Any, status: str = "success") -> None:
    """The end of a fold's logger run: Lightning's ``finalize`` (TensorBoard flushes, MLflow marks the run finished
    or failed), and a W&B run finished too (Lightning leaves it open until the process exits, so its summary would
    not be written and a later fold in the same process would log into it)."""
    if not logger:
        return
    logger.finalize(status)
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
        logger.experiment.finish(exit_code=0 if status == "success" else 1)


def log_epoch(loggers: Iterable[Any], row: Mapping[str, float]) -> None:
    """One epoch's history row to each logger, at step = the epoch number."""
    metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
    for logger in loggers:
        if logger is not None:
            logger.log_metrics(metrics, step=int(row["epoch"]))
