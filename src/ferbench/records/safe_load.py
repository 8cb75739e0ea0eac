"""Loading a checkpoint must never run code from it: every ``torch.load`` of ours is ``weights_only=True``.

A pickle can call any function while it loads (``__reduce__``): a weights file handed to ``model.init``, a
``last.ckpt`` planted in a results dir, or a ``best.ckpt`` in a copied record could run code before any check.
torch's weights-only unpickler builds tensors, numbers, strings and containers only, plus the classes allowed here:

* Lightning's checkpoints (``best.ckpt``, ``last.ckpt``) need nothing beyond torch's defaults (checked on real
  ones: plain, EMA, warm-up, SGD with cosine and step schedules, AM-Softmax); Lightning's own loads of them
  (resuming a fit, testing the best) run weights-only under this allow-list too;
* a pack's state file (``packed_last.pt``) holds NumPy's random state: plain numeric arrays and scalars.

A file that needs anything else is not one of ours: ``UnsafeFile``, one line naming it, and nothing of it runs.
"""

from __future__ import annotations

import pickle
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferbench.errors import UnsafeFile

try:  # NumPy 2 names its pickles' helpers numpy._core; NumPy 1 numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1
    from numpy.core import multiarray as _multiarray

_NUMERIC_DTYPES = (
    "Bool Int8 Int16 Int32 Int64 UInt8 UInt16 UInt32 UInt64 Float16 Float32 Float64 LongLong ULongLong".split()
)
ALLOWED_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    _multiarray._reconstruct,
    _multiarray.scalar,
    *(getattr(np.dtypes, f"{name}DType") for name in _NUMERIC_DTYPES if hasattr(np.dtypes, f"{name}DType")),
]
"""Beyond torch's defaults: numeric NumPy arrays and scalars (no object, string or record dtypes, no classes)."""

_WEIGHTS_ONLY = "Weights only load failed"


def allowed_types() -> AbstractContextManager:
    """The allow-list in force for a load made elsewhere (Lightning's own, resuming ``last.ckpt``)."""
    return torch.serialization.safe_globals(ALLOWED_GLOBALS)


def load_weights(path: Path, what: str) -> Any:
    """``path``'s contents, loaded to the CPU without running any of its code.

    ``what`` names the file's role in the error (``model.init``, ``resume state``). A file that needs a class or
    function outside the allow-list raises ``UnsafeFile``; any other failure (a truncated or foreign file) is
    torch's own exception, for the caller to set the file aside or report it.
    """
    with allowed_types():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if _WEIGHTS_ONLY not in str(exc):
                raise
            raise UnsafeFile(f"{what}: {path} refused, not loaded: {_needs(str(exc))}") from None


def _needs(message: str) -> str:
    """What the file asked for, in a few words, from torch's long message."""
    found = re.search(r"GLOBAL (\S+)", message)  # "GLOBAL posix.system was not an allowed global", "... is blocked"
    if found:
        return f"it would call {found.group(1)}, and only tensors, numbers and containers are loaded from a file"
    detail = message.split("WeightsUnpickler error:")[-1].strip().splitlines()
    return f"it holds more than tensors, numbers and containers ({(detail or ['?'])[0][:120]})"
