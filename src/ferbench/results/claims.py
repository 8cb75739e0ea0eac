"""A table's claims, judged from its cells: one verdict per claim and column, Holm-corrected over the table.

Reads aggregated cells only (never trains): each cell carries its per-(seed, fold) values and the digest
of every fold's test images, so two cells pair exactly where they tested the same images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ferbench.results import statistics as st
from ferbench.results.cells import CellResult, is_fraction
from ferbench.results.spec import Claim, TableSpec

RESAMPLED_SPLITS = ("kfold", "subject_kfold", "holdout", "paper_copies")
"""Splits whose folds (or per-seed draws) share training images: the corrected resampled t-test applies
(``paper_copies`` re-draws its 80/20 split of the copies per seed, as ``holdout`` does)."""


@dataclass
class ClaimResult:
    claim: Claim
    where: str
    """The column (row claims) or row (column claims) key this verdict is about."""
    where_label: str
    better: CellResult | None
    than: CellResult | None
    test: st.TestResult | None = None
    adjusted_p: float = math.nan
    margin: float = math.nan
    """Equivalence margin in the cells' units (``equivalence_margin``): the two one-sided tests' bounds."""
    tost_p: float = math.nan
    adjusted_tost_p: float = math.nan
    verdict: st.Verdict = "not run"
    why_not: str = ""

    @property
    def needed(self) -> float:
        return st.pairs_needed(self.test) if self.test is not None else math.nan


def _matched(better: CellResult, than: CellResult) -> tuple[np.ndarray, np.ndarray]:
    """Values of both cells at the (seed, fold, test images) they share, in the same order."""
    if not better.pairs or not than.pairs:
        return np.array([]), np.array([])
    theirs = {key: v for key, v in zip(than.pairs, than.values, strict=True)}
    mine = [(v, theirs[key]) for key, v in zip(better.pairs, better.values, strict=True) if key in theirs]
    pairs = np.array([(a, b) for a, b in mine if math.isfinite(a) and math.isfinite(b)]).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def compare(better: CellResult, than: CellResult, lower_is_better: bool = False) -> st.TestResult:
    """Paired where they share (seed, fold, test images), Welch otherwise; the difference is in the claimed sense."""
    sign = -1.0 if lower_is_better else 1.0
    a, b = _matched(better, than)
    if len(a) >= 2:
        resampled = better.split in RESAMPLED_SPLITS or than.split in RESAMPLED_SPLITS
        ratio = max(better.test_train_ratio, than.test_train_ratio)
        return st.compare_paired(sign * (a - b), ratio, resampled)
    va, vb = better.values[np.isfinite(better.values)], than.values[np.isfinite(than.values)]
    return st.compare_unpaired(sign * va, sign * vb)


def _cells_of(claim: Claim, spec: TableSpec, by_key: dict) -> list[tuple[str, str, CellResult, CellResult]]:
    if claim.across_columns:
        labels = {r.key: r.label for r in spec.rows}
        return [(r, labels[r], by_key[(r, claim.better)], by_key[(r, claim.than)]) for r in claim.rows]
    labels = {c.key: c.label for c in spec.columns}
    return [(c, labels[c], by_key[(claim.better, c)], by_key[(claim.than, c)]) for c in claim.columns]


def _why_not(better: CellResult, than: CellResult, metric: str | None) -> str:
    if metric and better.metric != metric:
        return f"the table's cells hold {better.metric}, the claim is about {metric}"
    idle = [c for c in (better, than) if c.status not in ("ours", "failed") or c.n == 0]
    return "; ".join(f"{c.row_label} / {c.column_label}: {IDLE.get(c.status, c.status)}" for c in idle)


IDLE = {
    "cited": "a cited figure (another paper's run), not testable here",
    "no data": "no data",
    "not run": "not run yet",
    "failed": "failed",
    "running": "being trained by another process",
    "incomplete": "not finished (some folds recorded)",
    "corrupt": "its record is corrupt",
    "paper only": "the paper's figure only",
}


def judge_claims(spec: TableSpec, cells: Sequence[CellResult]) -> list[ClaimResult]:
    """Every claim x column (or row): the test, then Holm over all of the table's tests, then the verdict."""
    by_key = {(c.row, c.column): c for c in cells}
    results = []
    for claim in spec.claims:
        for where, label, better, than in _cells_of(claim, spec, by_key):
            result = ClaimResult(claim, where, label, better, than)
            result.why_not = _why_not(better, than, claim.metric)
            if not result.why_not:
                result.test = compare(better, than, claim.lower_is_better)
                if result.test.n < 2:
                    result.why_not, result.test = "fewer than 2 runs per cell", None
            results.append(result)
    judged = [r for r in results if r.test is not None and converged(r)]
    for r in judged:  # each claim's margin in its own cells' units (a claim may name another metric)
        r.margin = equivalence_margin(spec, r.better)
        r.tost_p = st.tost_p(r.test, r.margin)
    # Holm over the tests that can reach a verdict: a provisional one is judged by no p-value, so it adds no test
    adjusted = st.holm([r.test.p_value for r in judged])
    adjusted_tost = st.holm([r.tost_p for r in judged])
    for r, p, p_tost in zip(judged, adjusted, adjusted_tost, strict=True):
        r.adjusted_p, r.adjusted_tost_p = p, p_tost
    for r in results:
        r.verdict = st.verdict(r.test, r.adjusted_p, r.adjusted_tost_p, converged(r))
        if r.verdict == "provisional":
            r.why_not = cut_text(r)
    return results


def converged(result: ClaimResult) -> bool:
    """Both cells of a claim converged (no fold cut by its epoch cap while still improving)."""
    return all(c is not None and c.converged for c in (result.better, result.than))


def cut_text(result: ClaimResult) -> str:
    """Which of a claim's cells were cut by the cap, and how many folds: why its verdict is provisional."""
    cut = [c for c in (result.better, result.than) if c is not None and not c.converged]
    return "; ".join(
        f"{c.row_label} / {c.column_label}: {c.cut_by_cap} of {c.n} folds cut by the {c.max_epochs}-epoch cap while "
        "still improving"
        for c in cut
    )


DEFAULT_MARGIN_PT = 1.0
"""The equivalence margin for fraction metrics, in percentage points, where a table states none: a difference
whose 90% interval lies within ±1 point is a tie at the precision these tables print."""


def equivalence_margin(spec: TableSpec, cell: CellResult | None) -> float:
    """The table's ``equivalence_margin`` (points) in the cells' units; NaN (no equivalence test) for metrics that
    are not fractions unless the table states a margin in their units."""
    stated = spec.equivalence_margin
    if cell is None:
        return math.nan
    factor = points_factor(cell.metric, spec.paper_scale)
    if factor is None:
        return float(stated) if stated is not None else math.nan
    return (DEFAULT_MARGIN_PT if stated is None else float(stated)) / factor


def points_factor(metric: str, scale: float) -> float | None:
    """Factor from a cell's values to percentage points, for fraction metrics (None: print as is)."""
    return 100 / scale if is_fraction(metric) else None


def _points(result: ClaimResult, scale: float) -> float | None:
    cell = result.better or result.than
    return points_factor(cell.metric, scale) if cell is not None else None


def _number(value: float, points: float | None) -> str:
    """A difference in percentage points (``points`` = factor to them) or as is."""
    return f"{value * points:+.2f} pt" if points else f"{value:+.4g}"


def needed_text(result: ClaimResult) -> str:
    """'≈ 40 pairs' / 'no number of repetitions' / 'no difference observed', at the observed effect and spread."""
    n = result.needed
    if result.test is not None and result.test.sd_diff == 0:
        return "unknown: every pair differs by the same amount, so there is no spread to test against (more seeds)"
    if math.isnan(n):
        return "no difference observed"
    if math.isinf(n):
        return (
            "none: the corrected test's variance never falls below n2/n1 (the folds' training sets overlap), "
            "and this effect is below that floor at any number of repetitions"
        )
    unit = "pairs (seed × fold)" if result.test and result.test.paired else "runs per cell"
    return f"≈ {int(n)} {unit}"


def claim_lines(spec: TableSpec, results: Sequence[ClaimResult]) -> list[str]:
    """The table's claims with their verdicts, in the order the YAML lists them."""
    return [verdict_line(r, _points(r, spec.paper_scale)) for r in results]


def verdict_line(result: ClaimResult, points: float | None) -> str:
    """One Markdown line: claim, where, verdict, difference with its CI, the test, p (Holm), Wilcoxon, n."""
    claim = result.claim
    head = f"**{claim.label()}** ({result.where_label}; paper: {claim.source}): "
    if result.test is None:
        return head + f"*not run* ({result.why_not})."
    t = result.test
    text = (
        f"*{result.verdict}*: difference {_number(t.mean_diff, points)} "
        f"(95% CI {_number(t.ci_low, points)} to {_number(t.ci_high, points)}), {t.test} "
        f"p = {t.p_value:.3g}, Holm p = {result.adjusted_p:.3g}, n = {t.n}"
    )
    if t.paired:
        text += f"; paired t p = {t.plain_paired_p:.3g}" if t.test == "corrected resampled t" else ""
        text += f", Wilcoxon p = {t.wilcoxon_p:.3g}" if math.isfinite(t.wilcoxon_p) else ""
    else:
        text += " (nothing pairs: the cells share no seed, fold and test images)"
    if math.isfinite(result.tost_p):
        margin = _number(result.margin, points).lstrip("+")
        text += f"; equivalence (±{margin}) TOST Holm p = {result.adjusted_tost_p:.3g}"
    if result.verdict == "inconclusive":
        text += f"; runs needed at this effect and spread: {needed_text(result)}"
    if result.verdict == "provisional":
        text += f"; provisional: {result.why_not}"
    return head + text + "."


CLAIM_COLUMNS = (
    "paper",
    "table",
    "claim",
    "where",
    "source",
    "verdict",
    "test",
    "n",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p",
    "holm_p",
    "margin",
    "tost_holm_p",
    "wilcoxon_p",
    "difference",
    "needed",
    "why_not",
    "text",
)


def claims_frame_rows(spec: TableSpec, results: Sequence[ClaimResult]) -> list[dict]:
    """Flat rows for ``<table>.claims.csv``: what the report and claims.md read."""
    rows = []
    for r in results:
        t = r.test
        rows.append(
            {
                "paper": spec.paper,
                "table": spec.table,
                "claim": r.claim.label(),
                "where": r.where_label,
                "source": r.claim.source,
                "verdict": r.verdict,
                "test": t.test if t else "",
                "n": t.n if t else 0,
                "mean_diff": t.mean_diff if t else math.nan,
                "ci_low": t.ci_low if t else math.nan,
                "ci_high": t.ci_high if t else math.nan,
                "p": t.p_value if t else math.nan,
                "holm_p": r.adjusted_p,
                "margin": r.margin,
                "tost_holm_p": r.adjusted_tost_p,
                "wilcoxon_p": t.wilcoxon_p if t else math.nan,
                "difference": _number(t.mean_diff, _points(r, spec.paper_scale)) if t else "",
                "needed": needed_text(r) if r.verdict == "inconclusive" else "",
                "why_not": r.why_not,
                "text": verdict_line(r, _points(r, spec.paper_scale)),
            }
        )
    return rows
