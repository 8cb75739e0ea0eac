"""Does a claimed difference between two table cells hold? Paired tests over matched (seed, fold) runs.

Two cells pair where they ran the same seed and fold on the same test images (the same split indices,
saved in each run's ``folds.npz``). Pairs get the paired t-test and the Wilcoxon signed-rank test; where
the runs resample the data (k-fold, hold-out re-drawn per seed) the folds share training images, the
differences are correlated and the plain paired t-test is too liberal, so the verdict uses the corrected
resampled t-test of Nadeau & Bengio instead. Unpaired Welch is the fallback only where nothing pairs.
Every p-value of a table's claims is Holm-corrected together; scipy.stats does the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
Verdict = Literal["holds", "reversed", "equivalent", "inconclusive", "provisional", "not run"]
VERDICTS: tuple[str, ...] = ("holds", "reversed", "equivalent", "inconclusive", "provisional", "not run")
"""Every verdict, in the order a tally lists them: *provisional* is a test on runs cut by their epoch cap while
still improving (never holds / reversed), *equivalent* a difference whose interval lies inside the stated margin."""


@dataclass(frozen=True)
class TestResult:
    """One two-sided test of the mean difference ``better - than`` (positive: in the claimed direction)."""

    test: str
    """'corrected resampled t' | 'paired t' | 'Welch t (unpaired)'."""
    n: int
    """Matched pairs (paired tests) or the smaller group (Welch)."""
    mean_diff: float
    sd_diff: float
    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float = math.nan
    plain_paired_p: float = math.nan
    """The uncorrected paired t-test's p, shown beside the corrected one for resampled designs."""
    test_train_ratio: float = 0.0
    paired: bool = True


def paired_t(diffs: Sequence[float]) -> tuple[float, float]:
    """Paired t-test on the differences (= ``scipy.stats.ttest_rel`` on the two columns): (t, p)."""
    result = stats.ttest_1samp(np.asarray(diffs, dtype=float), 0.0)
    return float(result.statistic), float(result.pvalue)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Wilcoxon signed-rank p on the differences; NaN when every difference is zero."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 1 or not np.any(d != 0):
        return math.nan
    return float(stats.wilcoxon(d).pvalue)


def corrected_resampled_t(diffs: Sequence[float], test_train_ratio: float) -> tuple[float, float, float]:
    """Corrected resampled t-test (Nadeau & Bengio): (t, p, standard error).

    With J differences ``d_j`` from J train/test resamplings (k folds x r repetitions), n1 training and n2
    test images each::

        t = mean(d) / sqrt((1/J + n2/n1) * var(d)),   var with ddof = 1,   t ~ Student t with J - 1 df

    The plain paired t-test uses ``1/J`` alone; ``n2/n1`` accounts for the training sets overlapping, which
    makes the J differences correlated. Source: C. Nadeau and Y. Bengio, "Inference for the Generalization
    Error", Machine Learning 52(3):239-281, 2003 (the corrected resampled t-test, their eq. for the
    "corrected resampled t"); applied to repeated k-fold CV by R. Bouckaert and E. Frank, "Evaluating the
    Replicability of Significance Tests for Comparing Learning Algorithms", PAKDD 2004.
    """
    d = np.asarray(diffs, dtype=float)
    j = len(d)
    if j < 2:
        return math.nan, math.nan, math.nan
    se = math.sqrt((1 / j + test_train_ratio) * float(np.var(d, ddof=1)))
    if se == 0:
        return math.nan, math.nan, 0.0
    t = float(np.mean(d)) / se
    return t, float(2 * stats.t.sf(abs(t), j - 1)), se


def mean_ci(diffs: Sequence[float], se: float | None = None, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean difference; ``se`` overrides the plain sd/sqrt(n) (corrected test)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    se = float(stats.sem(d)) if se is None else se
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * se
    return float(d.mean()) - half, float(d.mean()) + half


def compare_paired(diffs: Sequence[float], test_train_ratio: float, resampled: bool) -> TestResult:
    """The verdict's test over matched pairs: corrected resampled t where the data were resampled, else paired t."""
    d = np.asarray(diffs, dtype=float)
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else math.nan
    if sd == 0:  # every pair differs by the same amount: no spread, the t statistic is undefined (not p = 0)
        mean = float(d.mean())
        name = "corrected resampled t" if resampled else "paired t"
        return TestResult(name, len(d), mean, 0.0, math.nan, math.nan, mean, mean, math.nan, math.nan, test_train_ratio)
    t_plain, p_plain = paired_t(d) if len(d) > 1 else (math.nan, math.nan)
    if resampled:
        t, p, se = corrected_resampled_t(d, test_train_ratio)
        low, high = mean_ci(d, se)
        name = "corrected resampled t"
    else:
        t, p = t_plain, p_plain
        low, high = mean_ci(d)
        name = "paired t"
    mean = float(d.mean()) if len(d) else math.nan
    return TestResult(name, len(d), mean, sd, t, p, low, high, wilcoxon_p(d), p_plain, test_train_ratio, True)


def compare_unpaired(better: Sequence[float], than: Sequence[float]) -> TestResult:
    """Welch's t-test: for cells that share no (seed, fold, split), so nothing pairs."""
    a, b = np.asarray(better, dtype=float), np.asarray(than, dtype=float)
    n = min(len(a), len(b))
    if n < 2:
        return TestResult("Welch t (unpaired)", n, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(0.95)
    diff = float(a.mean() - b.mean())
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return TestResult(
        "Welch t (unpaired)",
        n,
        diff,
        sd,
        float(result.statistic),
        float(result.pvalue),
        float(ci.low),
        float(ci.high),
        paired=False,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    order = [i for i in np.argsort(p) if np.isfinite(p[i])]
    m = len(order)
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def standard_error(result: TestResult) -> tuple[float, float]:
    """(standard error of the mean difference, degrees of freedom) of the test ``result`` ran.

    The same variance each test used: ``(1/J + n2/n1) var`` (corrected resampled t), ``var / J`` (paired t),
    ``2 sd^2 / n`` with ``2n - 2`` df for Welch (``sd_diff`` is the pooled sd there, n the smaller group).
    """
    n, sd = result.n, result.sd_diff
    if n < 2 or not math.isfinite(sd):
        return math.nan, math.nan
    if not result.paired:
        return sd * math.sqrt(2 / n), 2 * n - 2
    if result.test == "corrected resampled t":
        return sd * math.sqrt(1 / n + result.test_train_ratio), n - 1
    return sd / math.sqrt(n), n - 1


def tost_p(result: TestResult, margin: float) -> float:
    """Two one-sided tests (Schuirmann) of ``-margin < mean difference < margin``: the larger one-sided p.

    p < alpha means the difference's (1 - 2 alpha) interval lies inside the margin: the two rows tie within it.
    With no spread (every pair differs by the same amount) the difference itself decides (0 inside, 1 outside).
    NaN without a margin or a test.
    """
    if not (math.isfinite(margin) and margin > 0) or result.n < 2 or not math.isfinite(result.mean_diff):
        return math.nan
    if result.sd_diff == 0:
        return 0.0 if abs(result.mean_diff) < margin else 1.0
    se, df = standard_error(result)
    if not (math.isfinite(se) and se > 0):
        return math.nan
    lower = float(stats.t.sf((result.mean_diff + margin) / se, df))  # H0: diff <= -margin
    upper = float(stats.t.sf((margin - result.mean_diff) / se, df))  # H0: diff >= +margin
    return max(lower, upper)


def verdict(
    result: TestResult | None, adjusted_p: float, adjusted_tost_p: float = math.nan, converged: bool = True
) -> Verdict:
    """The verdict of one claim's test, p-values Holm-adjusted over the table.

    *provisional* when a cell's runs were cut by their epoch cap while still improving (``converged`` False): such
    a difference may still change sign, so it never holds or reverses. Otherwise holds / reversed when the adjusted
    p < 0.05 (by the sign of the difference), *equivalent* when the adjusted two one-sided tests put the difference
    inside the margin, else inconclusive.
    """
    if result is None or result.n < 2:
        return "not run"
    if not converged:
        return "provisional"
    if math.isfinite(adjusted_p) and adjusted_p < ALPHA:
        return "holds" if result.mean_diff > 0 else "reversed"
    if math.isfinite(adjusted_tost_p) and adjusted_tost_p < ALPHA:
        return "equivalent"
    return "inconclusive"


MAX_RUNS = 100_000


def pairs_needed(result: TestResult, alpha: float = ALPHA, power: float = POWER) -> float:
    """Pairs (or runs per cell, unpaired) at which the observed mean difference and spread reach ``alpha`` with
    ``power``: the smallest n with |mean| / se(n) >= t_(1-alpha/2, df) + z_power.

    se(n) = sd * sqrt(f(n)): f = 1/n (paired t), 1/n + n2/n1 (corrected resampled t), 2/n (Welch, df 2n - 2).
    Under the corrected test f never falls below n2/n1, so an effect below that floor is out of reach at any
    number of repetitions (inf). NaN when no difference or no spread was seen.
    """
    mean, sd = abs(result.mean_diff), result.sd_diff
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean == 0 or sd == 0:
        return math.nan
    z_power = float(stats.norm.ppf(power))
    n = np.arange(2, MAX_RUNS + 1, dtype=float)
    if not result.paired:
        factor, df = 2 / n, 2 * n - 2
    elif result.test == "corrected resampled t":
        if mean / (sd * math.sqrt(result.test_train_ratio)) <= float(stats.norm.ppf(1 - alpha / 2)) + z_power:
            return math.inf
        factor, df = 1 / n + result.test_train_ratio, n - 1
    else:
        factor, df = 1 / n, n - 1
    reached = mean / (sd * np.sqrt(factor)) >= stats.t.ppf(1 - alpha / 2, df) + z_power
    return float(n[np.argmax(reached)]) if reached.any() else math.inf
