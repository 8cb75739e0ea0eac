"""A sweep's failed run is told once, by its own ``ferbench: error:`` line as it fails.

Hydra reports a failed job again after the sweep: "Error executing job with overrides: [...]", the message, and
the HYDRA_FULL_ERROR hint (a traceback's hint, for what is not one). Those three writes are left out; every
other write to stderr, a real traceback's included, passes as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from hydra.errors import CompactHydraException

JOB_REPORT = "Error executing job with overrides: "
HINT = "Set the environment variable HYDRA_FULL_ERROR=1"


class SweepRunFailed(CompactHydraException):
    """A failed run inside a sweep: Hydra runs every other job, then exits 1; the run's line was printed already."""

    MARK = "ferbench: a run of this sweep failed; its error line is above"
    """The message it is raised with: the one write of Hydra's report that names no job."""


class _QuietReport:
    """stderr, less Hydra's report of a SweepRunFailed: the job line is held until the next write shows whose."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.held, self.dropping = stream, "", False

    def write(self, text: str) -> int:
        held, self.held = self.held, ""
        if held and text == SweepRunFailed.MARK + os.linesep:
            self.dropping = True
            return len(text)
        if held:
            self.stream.write(held)
        if text.startswith(JOB_REPORT):
            self.held = text
        elif self.dropping and text.strip().startswith(HINT):
            self.dropping = False
        else:
            self.stream.write(text)
        return len(text)

    def __getattr__(self, name: str):  # flush, isatty, fileno, encoding: the stream's own
        return getattr(self.stream, name)


@contextmanager
def quiet_sweep_report() -> Iterator[None]:
    """While Hydra runs: its report of a failed sweep job (already told in one line) is not written again."""
    quiet = _QuietReport(sys.stderr)
    sys.stderr = quiet  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = quiet.stream
        if quiet.held:
            quiet.stream.write(quiet.held)
