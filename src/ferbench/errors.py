"""User-facing errors: the CLI prints their message as one line, never a traceback."""

import errno
import signal
from pathlib import Path


class FerbenchError(Exception):
    """Base of every error caused by the user's input rather than a bug in ferbench."""


class ConfigError(FerbenchError):
    """A config value is invalid; the message names the key and what was expected."""


class DataError(FerbenchError):
    """A data set is missing or malformed; the message names the file (and line) and the expected layout."""


class UnsafeFile(FerbenchError):
    """A file would run code (or build objects ferbench's own files never hold) if loaded; it was not loaded."""


class RunFailed(FerbenchError):
    """A training run could not finish (e.g. the loss became NaN); recorded, and a sweep goes on."""


class RunBusy(FerbenchError):
    """Another process holds the run's lock and is training it now; this one skips it."""


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
"""No space left, or the user's quota spent: freeing space and running again is the way back."""
READ_ONLY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
NOT_A_FOLDER = frozenset({errno.ENOTDIR, errno.EEXIST})


class CannotWrite(FerbenchError, OSError):
    """A folder ferbench must write in is full, read-only or not a folder: one line naming it.

    Still an OSError with its errno, so that code which copes with an unwritable file (a cache it can do
    without) goes on coping.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(code, message)
        self.message = message

    def __reduce__(self) -> tuple:  # picklable with its fields (a launcher may ship it back from a job)
        return type(self), (self.message, self.errno)

    def __str__(self) -> str:
        return self.message


def cannot_write(exc: OSError, folder: Path | str, what: str = "") -> CannotWrite | None:
    """``exc`` (raised writing in ``folder``) as one line when the user can fix it; None for any other OSError."""
    head = f"{folder}: cannot write {what}".rstrip()
    reason = exc.strerror or str(exc)
    if exc.errno in DISK_FULL:
        return CannotWrite(f"{head}: {reason}; free some space and run the same command", exc.errno)
    if exc.errno in READ_ONLY:
        return CannotWrite(f"{head} here (read-only?): {reason}", exc.errno)
    if exc.errno in NOT_A_FOLDER:
        return CannotWrite(f"{head} here: it is a file, not a folder", exc.errno)
    return None


def disk_full_in_run(exc: OSError, run_dir: Path) -> CannotWrite | None:
    """A full disk (or quota) while a run trains: its finished folds are on disk, and the same command resumes."""
    if exc.errno not in DISK_FULL:
        return None
    reason = exc.strerror or str(exc)
    return CannotWrite(
        f"{run_dir}: {reason.lower()} while training; the finished folds are kept there: free some space and run "
        "the same command to resume",
        exc.errno,
    )


class Interrupted(BaseException):
    """SIGTERM or SIGINT stopped ferbench; rerunning the same command resumes.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` (a sweep going on past a failed run)
    may swallow it. The CLI prints its one line and exits ``128 + signal`` (143 SIGTERM, 130 SIGINT).
    """

    def __init__(self, signum: int, where: str = "") -> None:
        self.signum, self.where = int(signum), where
        super().__init__(str(self))

    def __reduce__(self) -> tuple:  # picklable with its fields (a launcher may ship it back from a job)
        return type(self), (self.signum, self.where)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        at = f" at {self.where}" if self.where else ""
        return f"interrupted ({signal.Signals(self.signum).name}){at}; run the same command to resume"
