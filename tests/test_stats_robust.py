"""rliable's figures as orch computes them (analysis/robust.py): against a hand computation on a small case
and against scipy on fixed data, to the last digit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from orchestrator.analysis import robust
from orchestrator.analysis.papertable import mean_pm


def pairwise(x, y, axis=-1):
    """P(x > y) over every pair, ties 1/2: the definition, written out (vectorized for scipy's bootstrap)."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    table = (x[..., :, None] > y[..., None, :]) + 0.5 * (x[..., :, None] == y[..., None, :])
    return table.mean(axis=(-2, -1))


def test_probability_of_improvement_by_hand_and_as_scipy_s_mann_whitney_u():
    # a = 3, 1, 2 against b = 2, 0: 3 beats both (2), 1 beats 0 (1), 2 ties 2 (1/2) and beats 0 (1): 4.5 / 6
    assert robust.probability_of_improvement([3, 1, 2], [2, 0]) == 0.75
    assert robust.probability_of_improvement([2, 0], [3, 1, 2]) == 0.25  # the complement
    rng = np.random.default_rng(7)
    a, b = np.round(rng.normal(0.7, 0.05, 10), 2), np.round(rng.normal(0.65, 0.05, 8), 2)  # with ties
    u = sps.mannwhitneyu(a, b, alternative="greater").statistic
    assert robust.probability_of_improvement(a, b) == u / 80
    assert robust.probability_of_improvement([], b) is None


def test_probability_of_improvement_interval_is_scipy_s_bootstrap_to_the_bit():
    rng = np.random.default_rng(3)
    for na, nb in ((5, 5), (10, 7), (40, 40)):
        a, b = np.round(rng.normal(0.0, 1.0, na), 1), np.round(rng.normal(0.3, 1.0, nb), 1)
        reference = sps.bootstrap(
            (a, b), pairwise, n_resamples=9999, method="percentile", vectorized=True, rng=np.random.default_rng(0)
        )
        assert robust.poi_interval(a, b) == tuple(reference.confidence_interval)
    assert robust.poi_interval([1.0], [2.0, 3.0]) == (None, None)


def test_iqm_by_hand_and_its_interval_as_scipy_s():
    # 8 runs, one outlier: the middle 50% (drop 2 at each end) is 3, 4, 5, 6 -> 4.5; the mean would say 16
    x = [1, 2, 3, 4, 5, 6, 7, 100]
    assert robust.iqm(x) == 4.5 and np.mean(x) == 16
    rng = np.random.default_rng(11)
    y = rng.normal(0.6, 0.1, 10)
    assert robust.iqm(y) == sps.trim_mean(y, 0.25)
    reference = sps.bootstrap(
        (y,),
        lambda v, axis: sps.trim_mean(v, 0.25, axis=axis),
        n_resamples=9999,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    assert robust.iqm_interval(y) == tuple(reference.confidence_interval)
    assert robust.iqm_interval([0.5, 0.5, 0.5]) == (0.5, 0.5) and robust.iqm_interval([1.0]) == (None, None)


def test_normalization_orients_every_metric_so_that_one_is_the_best_seen():
    assert robust.normalize({"A": [0.5, 1.0], "B": [0.0]}, "max") == {"A": [0.5, 1.0], "B": [0.0]}
    assert robust.normalize({"A": [1.0], "B": [3.0, 2.0]}, "min") == {"A": [1.0], "B": [0.0, 0.5]}
    assert robust.normalize({"A": [2.0], "B": [2.0]}, "max") == {"A": [0.5], "B": [0.5]}


def test_aggregate_over_metrics_by_hand_and_its_stratified_bootstrap_as_scipy_s():
    scores = {
        "acc": {"A": [0.6, 0.8, 1.0, 0.9], "B": [0.2, 0.4, 0.6, 0.5]},  # scaled over 0.2..1.0
        "err": {"A": [1.0, 2.0, 1.5, 1.0], "B": [3.0, 2.0, 2.5, 3.0]},  # lower is better, scaled over 1..3
    }
    agg = robust.aggregate(scores, {"acc": "max", "err": "min"}, [("A", "B")])
    # A's scores: acc (x - 0.2) / 0.8 = 0.5, 0.75, 1, 0.875; err 1 - (x - 1) / 2 = 1, 0.5, 0.75, 1
    # pooled and sorted: 0.5 0.5 0.75 0.75 | 0.875 1 1 1 -> the middle four (drop 2 each end): 0.75 0.75 0.875 1
    a = agg.groups[0]
    assert a.name == "A" and a.iqm == pytest.approx((0.75 + 0.75 + 0.875 + 1) / 4, abs=1e-15)
    # P(A > B): acc, every A run above every B run but 0.6 vs 0.6 (a tie, 1/2): (15.5) / 16; err: A's 2.0 ties
    # B's 2.0 (1/2), everything else wins: 15.5 / 16; the mean over the two metrics
    (pair,) = agg.pairs
    assert pair.p_better == 15.5 / 16
    # the stratified bootstrap: each metric's runs resampled on their own, as scipy resamples several samples
    columns = [np.asarray(robust.normalize(scores[m], mode)["A"]) for m, mode in (("acc", "max"), ("err", "min"))]
    reference = sps.bootstrap(
        columns,
        lambda *c, axis: sps.trim_mean(np.concatenate(c, axis=-1), 0.25, axis=-1),
        n_resamples=9999,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    assert (a.iqm_low, a.iqm_high) == tuple(reference.confidence_interval)
    # the profile at tau = 0.5: A's run-scores above 0.5 are 6 of 8
    assert a.profile[list(robust.TAUS).index(0.5)] == 6 / 8
    assert len(a.profile) == len(a.profile_low) == len(a.profile_high) == len(robust.TAUS)


def test_the_table_writes_the_interval_to_two_significant_digits():
    assert mean_pm(0.67891, 0.0268) == "0.679 ± 0.027"
    assert mean_pm(12.345, 1.5) == "12.3 ± 1.5"
    assert mean_pm(0.5, None) == "0.5"


def test_large_groups_are_resampled_in_batches_with_the_same_figures_as_scipy_s():
    """Over 200 values, scipy resamples in batches (bounded memory at thousands of runs): the interval is
    still scipy's bootstrap of the definition, with the same batches."""
    rng = np.random.default_rng(5)
    a, b = np.round(rng.normal(0.0, 1.0, 120), 1), np.round(rng.normal(0.2, 1.0, 90), 1)
    assert robust.batch(210) == 2_000_000 // 210 and robust.batch(200) is None

    def by_ranks(x, y, axis=-1):
        x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
        ranks = sps.rankdata(np.concatenate([x, y], axis=-1), axis=-1)
        return (ranks[..., : x.shape[-1]].sum(axis=-1) - x.shape[-1] * (x.shape[-1] + 1) / 2) / (
            x.shape[-1] * y.shape[-1]
        )

    reference = sps.bootstrap(
        (a, b), by_ranks, n_resamples=9999, method="percentile", batch=robust.batch(210), rng=np.random.default_rng(0)
    )
    assert robust.poi_interval(a, b) == tuple(reference.confidence_interval)
