"""Models, one file per architecture family, all registered in ``MODELS``."""

from ferbench.models import simple_cnn  # noqa: F401  (registers)
from ferbench.models.registry import MODELS, create_model

__all__ = ["MODELS", "create_model"]
