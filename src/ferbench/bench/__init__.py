"""``ferbench bench``: the runner's training and evaluation speed beside a hand-written PyTorch loop.

Per case (a paper model at its input size and channels, its paper augmentation, synthetic faces cached as a
uint8 array) it measures images/s of: training through ferbench's own path (FERModule + FERDataModule + the
Trainer of ``build_trainer``), training through a plain loop (same model class, Adam, cross-entropy, a plain
DataLoader over the same arrays and augmentation, the same speed options), evaluation through both, and the
data path alone (loader + augmentation + collate). Warm-up steps are excluded; the device is synchronised only
at the two ends of the timed window, so the measurement adds no stalls of its own.
``--concurrent 1,2,4`` instead starts that many training processes of one case at once and sums their speed.
"""

from ferbench.bench.cases import Schedule, compose_case, default_cases, resolve_device
from ferbench.bench.concurrent import child_main, run_concurrent
from ferbench.bench.measure import PeakMemory, synchronizer
from ferbench.bench.packed import run_pack_benchmark
from ferbench.bench.table import fastest, paired_ratios, run_benchmark

__all__ = [
    "PeakMemory",
    "Schedule",
    "child_main",
    "compose_case",
    "default_cases",
    "fastest",
    "paired_ratios",
    "resolve_device",
    "run_benchmark",
    "run_concurrent",
    "run_pack_benchmark",
    "synchronizer",
]
