"""Third-party warnings ferbench has weighed, filtered in one place: each says something ferbench handles itself
(or says better), so on a user's stderr it is only noise that hides the lines that matter."""

from __future__ import annotations

import warnings

KNOWN_NOISE: tuple[tuple[type[Warning], str, str, str], ...] = (
    # Lightning: hints already weighed (any category, as they were filtered before they were listed here)
    (Warning, "", r".*does not have many workers.*", "num_workers is trainer.num_workers, chosen per machine"),
    (Warning, "", r".*LeafSpec.*", "a torch.utils._pytree deprecation inside Lightning"),
    (Warning, "", r".*number of training batches.*", "small data sets have few batches; log_every_n_steps is moot"),
    (Warning, "", r".*tensorboardX.*", "ferbench logs its own history.csv"),
    (Warning, "", r".*exists and is not empty.*", "a resumed fold; ferbench says so in its own line"),
    (
        Warning,
        "",
        r".*when logging on epoch level in distributed setting.*",
        "epoch metrics are torchmetrics objects, reduced over DDP ranks by compute(): no sync_dist needed",
    ),
    # torchmetrics: a class absent from a small test set
    (
        UserWarning,
        "torchmetrics",
        r"Average precision score for one or more classes was `nan`.*",
        "mAP averages the classes present in the test set, as its column says",
    ),
    # scipy.stats: runs whose numbers are equal (seeds that agree, a saturated accuracy)
    (RuntimeWarning, "scipy", r"Precision loss occurred in moment calculation.*", "equal values: the test reports nan"),
    (RuntimeWarning, "scipy", r"invalid value encountered in (scalar )?divide", "zero variance: the test reports nan"),
)
"""(category, module it is raised from ("" for any), message regex, why it is safe to drop)."""


def quiet_known_warnings() -> None:
    """Drop the warnings of ``KNOWN_NOISE``; every other warning still shows."""
    for category, module, message, _why in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
