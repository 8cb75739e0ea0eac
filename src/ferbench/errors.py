"""User-facing errors: the CLI prints their message as one line, never a traceback."""


class FerbenchError(Exception):
    """Base of every error caused by the user's input rather than a bug in ferbench."""


class ConfigError(FerbenchError):
    """A config value is invalid; the message names the key and what was expected."""


class DataError(FerbenchError):
    """A data set is missing or malformed; the message names the file (and line) and the expected layout."""


class RunFailed(FerbenchError):
    """A training run could not finish (e.g. the loss became NaN); recorded, and a sweep goes on."""


class RunBusy(FerbenchError):
    """Another process holds the run's lock and is training it now; this one skips it."""
