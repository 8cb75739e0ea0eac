"""Models, one file per architecture family, all registered in ``MODELS``."""

from ferbench.models import (  # noqa: F401  (registers)
    amdcnn,
    baselines,
    lightvgg,
    mnv3simam,
    shufflecsp,
    simple_cnn,
    yoloxnano,
    yoloxnano_det,
)
from ferbench.models.registry import MODELS, create_model

__all__ = ["MODELS", "create_model"]
