"""ferbench: rebuild the tables of FER papers from runs it trains itself."""

__version__ = "0.1.0"

import os as _os

# OpenMP threads that wait for work spin on their core by default: beside another busy process (a sweep's other
# job, a test suite) a step at two threads ran 25x slower than at one (issue 21). Passive waiting costs little on
# a quiet machine and avoids that; it must be set before torch loads its OpenMP runtime, and a user's own
# setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
