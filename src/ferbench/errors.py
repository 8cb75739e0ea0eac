"""User-facing errors: the CLI prints their message as one line, never a traceback."""

import signal


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
