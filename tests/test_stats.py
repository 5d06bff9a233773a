"""orchestrator.analysis.stats against scipy and textbook values on fixed data; the verdict text of compare."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from orchestrator.analysis import interval, stats
from orchestrator.analysis.verdict import verdict

A = np.array([0.71, 0.69, 0.74, 0.66, 0.72, 0.70, 0.73, 0.68])
B = np.array([0.65, 0.66, 0.61, 0.67, 0.63, 0.69, 0.62, 0.64])


def test_summary_matches_textbook_and_scipy():
    s = stats.summarize([1, 2, 3, 4, 5])
    assert (s.n, s.mean, s.median, s.min, s.max) == (5, 3.0, 3.0, 1.0, 5.0)
    assert s.std == pytest.approx(math.sqrt(2.5))
    assert s.sem == pytest.approx(math.sqrt(2.5 / 5))
    # t_{0.975, 4} = 2.776445: 3 +- 2.776445 * 0.707107
    assert (s.ci_low, s.ci_high) == pytest.approx((1.036757, 4.963243), abs=1e-6)
    s = stats.summarize(A)
    assert s.sem == pytest.approx(sps.sem(A))
    assert (s.ci_low, s.ci_high) == pytest.approx(sps.t.interval(0.95, len(A) - 1, loc=A.mean(), scale=sps.sem(A)))


def test_bootstrap_is_seeded_stable_and_scipy_s():
    first, second = stats.summarize(A), stats.summarize(A)
    assert (first.boot_low, first.boot_high) == (second.boot_low, second.boot_high)
    assert first.boot_method == "BCa"
    ref = sps.bootstrap(
        (A,), np.mean, n_resamples=stats.BOOT_RESAMPLES, method="BCa", rng=np.random.default_rng(stats.BOOT_SEED)
    ).confidence_interval
    assert (first.boot_low, first.boot_high) == pytest.approx((ref.low, ref.high))
    assert first.boot_low < A.mean() < first.boot_high
    other = stats.summarize(A, seed=1)
    assert (other.boot_low, other.boot_high) != (first.boot_low, first.boot_high)
    # the bootstrap interval of a mean is close to the t-interval on well-behaved data
    assert first.boot_low == pytest.approx(first.ci_low, abs=0.01)


def test_degenerate_groups_give_none_not_numbers():
    single = stats.summarize([0.5])
    assert single.n == 1 and single.std is None and single.ci_low is None and single.boot_low is None
    const = stats.summarize([0.3, 0.3, 0.3])
    assert const.std == 0 and (const.ci_low, const.ci_high) == (0.3, 0.3) and const.boot_method == "constant"
    nan = stats.summarize([1.0, float("nan"), 2.0, float("inf")])
    assert nan.n == 2 and nan.n_nonfinite == 2 and nan.mean == 1.5
    empty = stats.summarize([float("nan")])
    assert empty.n == 0 and empty.mean is None


def test_tests_match_scipy():
    c = stats.compare("a", A, "b", B)
    welch = sps.ttest_ind(A, B, equal_var=False)
    assert c.tests["welch_t"].pvalue == pytest.approx(welch.pvalue)
    assert c.tests["welch_t"].statistic == pytest.approx(welch.statistic)
    ci = welch.confidence_interval(0.95)
    assert (c.diff_low, c.diff_high) == pytest.approx((ci.low, ci.high))
    assert c.tests["mann_whitney_u"].pvalue == pytest.approx(sps.mannwhitneyu(A, B, alternative="two-sided").pvalue)
    seeds = list(range(8))
    p = stats.compare("a", A, "b", B, seeds, seeds)
    assert p.tests["paired_t"].pvalue == pytest.approx(sps.ttest_rel(A, B).pvalue)
    assert p.tests["wilcoxon"].pvalue == pytest.approx(sps.wilcoxon(A, B).pvalue)
    # Welch's statistic by hand: (ma - mb) / sqrt(va/na + vb/nb)
    t = (A.mean() - B.mean()) / math.sqrt(A.var(ddof=1) / 8 + B.var(ddof=1) / 8)
    assert c.tests["welch_t"].statistic == pytest.approx(t)


def test_effect_sizes():
    d = stats.cohens_d(A, B)
    pooled = math.sqrt((7 * A.var(ddof=1) + 7 * B.var(ddof=1)) / 14)
    assert d == pytest.approx((A.mean() - B.mean()) / pooled)
    assert stats.hedges_g(A, B) == pytest.approx(d * (1 - 3 / (4 * 14 - 1)), rel=1e-3)  # Hedges' approximation
    # Cliff's delta = 2U / (na nb) - 1 with U from Mann-Whitney
    u = sps.mannwhitneyu(A, B).statistic
    assert stats.cliffs_delta(A, B) == pytest.approx(2 * u / 64 - 1)
    assert stats.cliffs_delta(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert stats.cohens_d(np.array([1.0, 1.0]), np.array([1.0, 1.0])) is None


def test_holm_against_hand_computation():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone: 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert stats.holm([0.01]) == [0.01]
    assert stats.holm([]) == []


def test_seeds_needed_matches_cohens_tables():
    # Cohen (1988) / G*Power, two-sided alpha 0.05, power 0.8
    assert stats.seeds_needed(0.5, 0.05) == 64
    assert stats.seeds_needed(0.8, 0.05) == 26
    assert stats.seeds_needed(-0.8, 0.05) == 26
    assert stats.seeds_needed(0.5, 0.05, paired=True) == 34
    n = stats.seeds_needed(0.3, 0.05)
    assert stats.power_t(0.3, n, 0.05) >= 0.8 > stats.power_t(0.3, n - 1, 0.05)
    assert stats.seeds_needed(0.0, 0.05) is None and stats.seeds_needed(None, 0.05) is None
    assert stats.seeds_needed(1e-4, 0.05) is None  # beyond MAX_SEEDS


def test_paired_selection_by_shared_seeds():
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1.0, 10)  # large seed-to-seed spread, shared by both groups
    a, b = base + 0.2 + rng.normal(0, 0.02, 10), base
    seeds = [str(s) for s in range(10)]
    paired = stats.compare("a", a, "b", b, seeds, seeds)
    assert paired.paired and paired.primary == "paired_t" and paired.n_pairs == 10
    assert set(paired.tests) == {
        "welch_t",
        "mann_whitney_u",
        "paired_t",
        "wilcoxon",
        "permutation",
        "permutation_paired",
    }
    assert paired.tests["paired_t"].pvalue < 1e-6 < 0.05 < paired.tests["welch_t"].pvalue  # pairing removes the spread
    unpaired = stats.compare("a", a, "b", b, seeds, [str(s + 10) for s in range(10)])
    assert not unpaired.paired and unpaired.primary == "welch_t" and "paired_t" not in unpaired.tests
    partial = stats.compare("a", a, "b", b, seeds, seeds[:3] + [str(s + 10) for s in range(7)])
    assert partial.n_pairs == 3 and partial.primary == "paired_t"
    assert partial.tests["paired_t"].pvalue == pytest.approx(sps.ttest_rel(a[:3], b[:3]).pvalue)
    pooled = stats.compare("a", a, "b", b, ["1", "1", *seeds[2:]], seeds)  # a seed twice: no pairing
    assert not pooled.paired and pooled.primary == "welch_t"
    nan_pair = stats.compare("a", np.r_[a[:9], np.nan], "b", b, seeds, seeds)
    assert nan_pair.n_a == 9 and nan_pair.n_pairs == 9


def test_no_misleading_p_values_on_constant_data():
    # scipy says p = 0 for two constant groups that differ; orch says there is no test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert sps.ttest_ind([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], equal_var=False).pvalue == 0
    c = stats.compare("a", [1.0, 1.0, 1.0], "b", [2.0, 2.0, 2.0], ["0", "1", "2"], ["0", "1", "2"])
    assert c.p_value is None and c.tests["welch_t"].pvalue is None and c.tests["paired_t"].pvalue is None
    assert not c.identical
    same = stats.compare("a", [1.0, 1.0], "b", [1.0, 1.0])
    assert same.identical and same.p_value is None
    # the same seeded noise shifted by 0.3: differences vary only by rounding, paired t must not claim p ~ 0
    noise = np.random.default_rng(0).normal(0, 0.05, 5)
    shifted = stats.compare("a", 0.3 + noise, "b", noise, list(range(5)), list(range(5)))
    assert shifted.tests["paired_t"].pvalue is None and shifted.primary == "welch_t"
    assert shifted.p_value == pytest.approx(sps.ttest_ind(0.3 + noise, noise, equal_var=False).pvalue)
    stats.correct([c, same, shifted], 0.05)
    assert (c.significant, same.significant, shifted.significant) == (False, False, True)
    assert shifted.p_holm == shifted.p_value  # the family is the defined p-values only


def _verdict(a, b, mode="min", alpha=0.05, seeds=False, n_comparisons=1):
    c = stats.compare("new", a, "old", b, *((list(range(len(a))), list(range(len(b)))) if seeds else (None, None)))
    family = [c] + [stats.compare("x", A, "y", A + 0.001) for _ in range(n_comparisons - 1)]
    stats.correct(family, alpha)
    return c, verdict(c, "loss", mode, alpha)


def test_verdict_text():
    c, (outcome, text) = _verdict(B, A)  # B is lower: better for a loss
    assert outcome == "better" and c.significant
    assert text.startswith("`new` is better than `old` (lower loss is better)")
    assert f"lower by {abs(c.diff):.4g}" in text and "Significant at alpha = 0.05 after Holm correction" in text
    assert "95% CI" in text and "Welch's t-test" in text
    c, (outcome, text) = _verdict(B, A, mode="max")
    assert outcome == "worse" and text.startswith("`old` is better than `new` (higher loss is better)")
    c, (outcome, text) = _verdict(B, A, seeds=True)
    assert "paired t-test" in text and "8 paired seeds" in text

    # a real but small effect with 4 seeds: not significant, and how many seeds would tell
    a, b = np.array([1.0, 1.2, 0.9, 1.1]), np.array([1.05, 1.25, 1.0, 1.2])
    c, (outcome, text) = _verdict(a, b)
    assert outcome == "underpowered" and not c.significant
    assert text.startswith("no significant difference between `new` and `old` at alpha = 0.05")
    assert f"about {c.seeds_needed} seeds per group would give 80% power; there are 4" in text
    assert c.seeds_needed == stats.seeds_needed(c.cohens_d, 0.05)

    # Holm: the same data, significant alone, not among 5 comparisons
    a, b = A, A - 0.035  # Welch p = 0.020
    alone, _ = _verdict(a, b)
    among, (_, text) = _verdict(a, b, n_comparisons=5)
    assert alone.p_value == among.p_value < 0.05
    assert alone.significant and not among.significant and among.p_holm > alone.p_holm
    assert "Holm p = " in text

    assert _verdict([1.0], A)[1][0] == "too_few_runs"
    assert "at least 2 per group" in _verdict([1.0], A)[1][1]
    assert _verdict([1.0, 1.0], [1.0, 1.0])[1] == (
        "identical",
        "no difference: `new` and `old` give identical loss in every run.",
    )
    _, (outcome, text) = _verdict([1.0, 1.0], [2.0, 2.0])
    assert outcome == "constant" and "no test applies" in text and text.startswith("`new` is better")


def test_the_light_interval_is_scipy_stats_t_interval_to_the_last_bit():
    """Parent aggregates use analysis/interval.py (no scipy.stats import); orch compare's summaries use
    the same numbers: both must be exactly what scipy.stats.t.interval gives."""
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 10, 31, 200):
        for confidence in (0.9, 0.95, 0.99):
            x = rng.normal(rng.uniform(-5, 5), rng.uniform(0.01, 3), n)
            expected = sps.t.interval(confidence, n - 1, loc=np.mean(x), scale=sps.sem(x))
            assert interval.t_interval(x, confidence) == (float(expected[0]), float(expected[1]))
    values = [0.3, 0.1, float("nan"), 0.2]
    agg = interval.aggregates("loss", values)
    assert agg["loss_n"] == 3 and agg["loss_mean"] == pytest.approx(0.2, abs=1e-15)
    assert (agg["loss_ci_low"], agg["loss_ci_high"]) == interval.t_interval(np.array([0.3, 0.1, 0.2]))


def test_a_constant_paired_difference_says_why_the_paired_test_is_not_the_primary_one():
    c = stats.compare("a", [1.0, 2.0, 3.5], "b", [0.5, 1.5, 3.0], ["0", "1", "2"], ["0", "1", "2"])
    assert c.paired and c.primary == "welch_t" and "differs by the same amount" in c.primary_why
    varied = stats.compare("a", [1.0, 2.0, 3.5], "b", [0.5, 1.7, 3.0], ["0", "1", "2"], ["0", "1", "2"])
    assert varied.primary == "paired_t" and varied.primary_why == ""


def test_permutation_tests_against_a_hand_count():
    # paired: differences 1, 2, 3; of the 8 sign flips only +++ and --- reach |mean| >= 2
    assert stats.permutation_paired(np.array([1.0, 2.0, 3.0]), np.zeros(3)).pvalue == pytest.approx(2 / 8)
    # unpaired: of the 6 ways to split {1, 2, 3, 4} in two pairs, 2 reach |difference of means| >= 2
    assert stats.permutation(np.array([1.0, 2.0]), np.array([3.0, 4.0])).pvalue == pytest.approx(2 / 6)
    # 10 pairs: exact (2^10 sign flips), the smallest p is 2/1024; the same value every time
    a, b = np.arange(10.0) + 1.0, np.arange(10.0)
    assert stats.permutation_paired(a, b).pvalue == pytest.approx(2 / 1024)
    assert stats.permutation_paired(np.zeros(3), np.zeros(3)).pvalue is None


def test_permutation_as_the_primary_test():
    a, b, seeds = [0.61, 0.66, 0.70, 0.64, 0.72], [0.58, 0.60, 0.65, 0.66, 0.63], ["0", "1", "2", "3", "4"]
    c = stats.compare("a", a, "b", b, seeds, seeds, test="permutation")
    assert c.primary == "permutation_paired" and c.p_value == c.tests["permutation_paired"].pvalue
    assert c.uses_pairs and c.diff_low is not None  # the interval stays the paired t-test's
    unpaired = stats.compare("a", a, "b", b, test="permutation")
    assert unpaired.primary == "permutation" and not unpaired.uses_pairs
    t = stats.compare("a", a, "b", b, seeds, seeds)
    assert t.primary == "paired_t" and "permutation_paired" in t.tests  # computed either way, for the report
