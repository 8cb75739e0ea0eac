"""Data sets (one file per published format), preprocessing, augmentation and split protocols."""

from ferbench.data import (  # noqa: F401  (each module registers its loader)
    ckplus,
    copies,  # registers split=paper_copies
    fer2013,
    ferplus,
    folder,
    jaffe,
    pasted,
    rafd,
    rafdb,
    synthetic,
)
from ferbench.data.base import DATASETS, DataSource

__all__ = ["DATASETS", "DataSource"]
