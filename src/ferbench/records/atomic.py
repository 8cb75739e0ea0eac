"""Write-to-temporary-then-rename: a killed process never leaves a half-written file behind.

Every file ferbench writes (records, tables, figures, checkpoints, caches) goes through ``atomic_path``: the one
place that picks the temporary name, fsyncs, sets the mode and renames.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd


def umask_mode() -> int:
    """The mode a plain ``open()`` gives a new file under this process's umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is fsynced and renamed over ``path``, on
    failure removed (``path`` keeps what it had).

    The temporary name (``.<name>.<random>.tmp``, made by ``mkstemp``) is unique per process and thread, so
    writers racing on one cache file each rename a whole file. ``mkstemp`` makes it private (0600); it gets the
    umask's mode before the rename, so that collaborators on a shared disk can read records, tables and figures
    as they could any file the user writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and rename it into place (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_stream(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on the temporary file opened for binary writing, then rename it into place.

    For numpy's savers (``np.save``, ``np.savez_compressed``): given a bare path they append ``.npy`` / ``.npz``
    to the temporary name, so the rename would miss what they wrote; given a handle they write into it."""

    def to_handle(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    return write_atomic(path, to_handle)


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_bytes(path: Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
