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

from ferbench.errors import DISK_FULL, FerbenchError, cannot_write


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
    tmp = _temporary_in(path.parent, f".{path.name}.")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk mid-write: one line naming the folder (the old file is intact)
        if exc.errno in DISK_FULL and not isinstance(exc, FerbenchError):
            raise cannot_write(exc, path.parent) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _temporary_in(folder: Path, prefix: str, what: str = "") -> Path:
    """A new empty file in ``folder`` (made if missing); a folder that is read-only, full or a file is one line
    naming it, before anything is written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    except OSError as exc:
        raise (cannot_write(exc, _first_missing_or_blocked(folder), what) or exc) from None
    os.close(fd)
    return Path(name)


def _first_missing_or_blocked(folder: Path) -> Path:
    """The folder a user must mend: the deepest one that exists (or the file standing where a folder should)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return folder


def check_writable(folder: Path, what: str = "") -> None:
    """Fail before the work, not after it, when ``folder`` cannot take a file (read-only, full, a file)."""
    _temporary_in(Path(folder), ".write_probe.", what).unlink()


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
