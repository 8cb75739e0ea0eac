"""Paired statistics and claim verdicts, against known answers (scipy's direct results, worked examples)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ferbench.results import statistics as st
from ferbench.results.cells import CellResult
from ferbench.results.claims import judge_claims, needed_text, verdict_line
from ferbench.results.spec import Claim, Column, Row, TableSpec


def test_paired_tests_match_scipy_on_hand_made_fold_pairs():
    a = np.array([0.81, 0.78, 0.84, 0.80, 0.79, 0.83, 0.82, 0.77])
    b = np.array([0.79, 0.77, 0.80, 0.80, 0.76, 0.82, 0.78, 0.78])
    t, p = st.paired_t(a - b)
    direct = stats.ttest_rel(a, b)
    assert (t, p) == pytest.approx((direct.statistic, direct.pvalue))
    assert st.wilcoxon_p(a - b) == pytest.approx(stats.wilcoxon(a, b).pvalue)
    low, high = st.mean_ci(a - b)
    ci = direct.confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high))


def test_corrected_resampled_t_worked_example():
    """d = 1..5 points from 5-fold CV (n2/n1 = 1/4): mean 0.03, var 0.00025, factor 1/5 + 1/4 = 0.45.

    se = sqrt(0.45 * 0.00025) = 0.0106066, t = 0.03 / se = 2*sqrt(2) = 2.828427. Student t with 4 df has the
    closed form F(t) = 1/2 + (3/8) u (1 - u^2/12) with u = t / sqrt(1 + t^2/4): u = 2.828427 / sqrt(3) = 1.632993,
    F = 1/2 + 0.375 * 1.632993 * (1 - 8/36) = 0.976290, so p = 2 (1 - F) = 0.047421. The uncorrected
    paired t-test would give t = 0.03 / sqrt(0.00025 / 5) = 4.242641, p = 0.0132: the correction matters.
    """
    d = [0.01, 0.02, 0.03, 0.04, 0.05]
    t, p, se = st.corrected_resampled_t(d, test_train_ratio=0.25)
    assert se == pytest.approx(0.0106066, abs=1e-7)
    assert t == pytest.approx(2.828427, abs=1e-6)
    assert p == pytest.approx(0.047421, abs=1e-6)
    assert st.paired_t(d)[0] == pytest.approx(4.242641, abs=1e-6)
    assert st.paired_t(d)[1] == pytest.approx(0.01324, abs=1e-5)
    assert st.corrected_resampled_t(d, 0.0)[1] == pytest.approx(st.paired_t(d)[1])  # no overlap: plain paired t


def test_welch_and_holm_known_answers():
    a, b = [0.70, 0.72, 0.71, 0.74], [0.65, 0.69, 0.60, 0.66, 0.64]
    result = st.compare_unpaired(a, b)
    direct = stats.ttest_ind(a, b, equal_var=False)
    assert (result.statistic, result.p_value) == pytest.approx((direct.statistic, direct.pvalue))
    assert not result.paired
    # Holm by hand: sorted 0.01, 0.02, 0.04 -> 3*0.01 = 0.03, 2*0.02 = 0.04, max(0.04, 1*0.04) = 0.04
    assert st.holm([0.04, 0.01, math.nan, 0.02]) == pytest.approx([0.04, 0.03, math.nan, 0.04], nan_ok=True)
    assert st.holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])  # step-down keeps order: max(0.02, 1*0.5)


def _cell(row: str, values, split: str = "official", seeds=None, status: str = "ours") -> CellResult:
    values = np.asarray(values, dtype=float)
    seeds = list(range(len(values))) if seeds is None else seeds
    return CellResult(
        row=row,
        column="c",
        row_label=row,
        column_label="C",
        metric="accuracy",
        status=status,
        values=values,
        pairs=tuple((s, 0, "same-test") for s in seeds),
        split=split,
        test_train_ratio=0.25,
    )


def _spec(*claims: Claim) -> TableSpec:
    rows = tuple(Row(k, k) for k in ("base", "good", "bad", "same", "gone"))
    return TableSpec("p", "t", "T", path=None, paper_scale=1, columns=(Column("c", "C"),), rows=rows, claims=claims)


def test_one_verdict_of_each_kind_from_fabricated_records():
    base = [0.60, 0.61, 0.59, 0.62, 0.60, 0.61]
    cells = [
        _cell("base", base),
        _cell("good", [v + 0.05 + 0.002 * (i % 2) for i, v in enumerate(base)]),  # +5 points every seed
        _cell("bad", [v - 0.04 - 0.003 * (i % 3) for i, v in enumerate(base)]),  # -4 points every seed
        _cell("same", [v + 0.003 + (0.01 if i % 2 else -0.01) for i, v in enumerate(base)]),  # small, noisy
        _cell("gone", [], status="not run"),
    ]
    claims = [Claim(k, "base", f"Sec. {k}", columns=("c",)) for k in ("good", "bad", "same", "gone")]
    results = {r.claim.better: r for r in judge_claims(_spec(*claims), cells)}
    assert {k: r.verdict for k, r in results.items()} == {
        "good": "holds",
        "bad": "reversed",
        "same": "inconclusive",
        "gone": "not run",
    }
    assert results["good"].test.test == "paired t" and results["good"].test.n == 6
    assert results["good"].test.mean_diff == pytest.approx(0.051)
    # Holm over the 3 tests that ran: the smallest raw p is multiplied by 3
    ps = sorted(r.test.p_value for r in results.values() if r.test)
    assert min(r.adjusted_p for r in results.values() if r.test) == pytest.approx(3 * ps[0])
    assert "runs needed" in verdict_line(results["same"], 100)
    assert results["same"].needed > 6
    assert "not run" in verdict_line(results["gone"], 100)


def test_resampled_splits_use_the_corrected_test_and_unmatched_cells_use_welch():
    a = _cell("good", [0.80, 0.82, 0.81, 0.84, 0.83], split="kfold")
    b = _cell("base", [0.79, 0.80, 0.78, 0.80, 0.78], split="kfold")
    results = judge_claims(_spec(Claim("good", "base", "x", columns=("c",))), [a, b])
    d = a.values - b.values
    assert results[0].test.test == "corrected resampled t"
    assert results[0].test.p_value == pytest.approx(st.corrected_resampled_t(d, 0.25)[1])
    assert results[0].test.plain_paired_p == pytest.approx(stats.ttest_rel(a.values, b.values).pvalue)
    other = _cell("base", [0.79, 0.80, 0.78, 0.80, 0.78], split="kfold", seeds=[10, 11, 12, 13, 14])
    welch = judge_claims(_spec(Claim("good", "base", "x", columns=("c",))), [a, other])[0]
    assert welch.test.test == "Welch t (unpaired)"
    assert welch.test.p_value == pytest.approx(stats.ttest_ind(a.values, other.values, equal_var=False).pvalue)
    assert "nothing pairs" in verdict_line(welch, 100)


def test_runs_needed_has_a_floor_under_the_corrected_test():
    tiny = st.compare_paired([0.001, -0.002, 0.003, 0.0, 0.002], test_train_ratio=0.25, resampled=True)
    assert math.isinf(st.pairs_needed(tiny))
    plain = st.compare_paired([0.001, -0.002, 0.003, 0.0, 0.002], test_train_ratio=0.25, resampled=False)
    n = st.pairs_needed(plain)

    def reaches(k: float) -> bool:  # the t-based rule, by hand
        return plain.mean_diff / (plain.sd_diff / math.sqrt(k)) >= stats.t.ppf(0.975, k - 1) + stats.norm.ppf(0.8)

    assert reaches(n) and not reaches(n - 1)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert n >= math.ceil((z * plain.sd_diff / plain.mean_diff) ** 2)  # t quantiles need at least the normal n
    flat = st.compare_paired([0.0, 0.0, 0.0], 0.0, resampled=False)
    assert st.verdict(flat, math.nan) == "inconclusive"
    from ferbench.results.claims import ClaimResult

    result = ClaimResult(Claim("a", "b", "s", columns=("c",)), "c", "C", None, None, tiny, 1.0, "inconclusive")
    assert needed_text(result).startswith("none")


def test_pairs_without_spread_are_inconclusive_not_p_zero():
    """scipy gives t = inf, p = 0 when every difference is equal (two synthetic seeds each 1 image worse)."""
    flat = st.compare_paired([-0.0071, -0.0071], 0.0, resampled=False)
    assert math.isnan(flat.p_value) and flat.ci_low == flat.ci_high == pytest.approx(-0.0071)
    assert st.verdict(flat, st.holm([flat.p_value])[0]) == "inconclusive"
    from ferbench.results.claims import ClaimResult

    result = ClaimResult(Claim("a", "b", "s", columns=("c",)), "c", "C", None, None, flat, math.nan, "inconclusive")
    assert needed_text(result).startswith("unknown: every pair differs by the same amount")


def test_tost_ties_inside_the_margin_and_not_wider_or_farther():
    d = np.array([0.001, -0.002, 0.0, 0.002, -0.001])
    tie = st.compare_paired(d, 0.0, resampled=False)
    se = float(np.std(d, ddof=1)) / math.sqrt(5)
    by_hand = max(stats.t.sf((d.mean() + 0.01) / se, 4), stats.t.sf((0.01 - d.mean()) / se, 4))
    assert st.tost_p(tie, 0.01) == pytest.approx(by_hand) and by_hand < 0.001
    far = st.compare_paired([0.02, 0.018, 0.022, 0.021, 0.019], 0.0, resampled=False)
    wide = st.compare_paired([0.03, -0.03, 0.02, -0.02, 0.0], 0.0, resampled=False)
    assert st.tost_p(far, 0.01) > 0.9 and st.tost_p(wide, 0.01) > 0.05
    assert math.isnan(st.tost_p(tie, math.nan))
    # the corrected resampled test's wider interval (n2/n1 = 0.25) makes the same pairs no tie at a tight margin
    corrected = st.compare_paired(d * 3, 0.25, resampled=True)
    assert st.tost_p(st.compare_paired(d * 3, 0.0, resampled=False), 0.006) < 0.05 < st.tost_p(corrected, 0.006)


def test_verdicts_provisional_before_significance_and_equivalent_after_it():
    d = [0.05, 0.052, 0.049, 0.051, 0.05]
    strong = st.compare_paired(d, 0.0, resampled=False)
    tie = st.compare_paired([0.001, -0.002, 0.0, 0.002, -0.001], 0.0, resampled=False)
    assert st.verdict(strong, 0.001) == "holds"
    assert st.verdict(strong, 0.001, converged=False) == "provisional"  # cut by the cap: never holds
    assert st.verdict(tie, 0.9, 0.001) == "equivalent"
    assert st.verdict(tie, 0.9, 0.2) == "inconclusive"
    assert st.verdict(None, math.nan, converged=False) == "not run"
    assert set(st.VERDICTS) == set(st.Verdict.__args__)
