"""Data sets (one file per published format), preprocessing, augmentation and split protocols."""

from ferbench.data import synthetic  # noqa: F401  (registers)
from ferbench.data.base import DATASETS, DataSource

__all__ = ["DATASETS", "DataSource"]
