"""The figures a reviewer trusts at 5-10 seeds, as rliable defines them (Agarwal et al. 2021, "Deep
reinforcement learning at the edge of the statistical precipice"), computed with scipy (rliable 1.2 itself
does not import next to pandas 3: its `arch` dependency fails at import):

- the probability of improvement P(A > B): the probability that a random run of A beats a random run of B,
  ties counting 1/2, i.e. Mann-Whitney's U of A over n_a n_b; with a percentile bootstrap interval that
  resamples each group on its own;
- the interquartile mean (IQM) of a group: the mean of its middle 50% of runs (``scipy.stats.trim_mean(x,
  0.25)``), robust to an outlier seed yet using half the runs, unlike the median; with a percentile
  bootstrap interval;
- over several metrics (tasks): each metric's values scaled to [0, 1] over every compared run (1: the best
  value seen, whichever way is better), then per group the IQM over all its runs of all metrics and the
  performance profile (the fraction of its run-scores above each threshold), with stratified bootstrap
  intervals: each metric's runs are resampled on their own, as rliable's ``StratifiedBootstrap`` does;
  and P(A > B) averaged over the metrics.

Every bootstrap here draws 9,999 resamples from seed 0, so the same data always gives the same interval."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from orchestrator.analysis.interval import CONFIDENCE

RESAMPLES = 9999
SEED = 0
TAUS = np.linspace(0.0, 1.0, 21)  # thresholds of the performance profile, on the normalized scale


def batch(n_values: int) -> int | None:
    """Resamples per batch of scipy's resampling: all at once for small groups (the draws, and so the numbers,
    of scipy's default), bounded batches when 9,999 resamples of every value would take hundreds of MB (5,000
    runs: 400 MB of indices alone). Deterministic either way: same data, same interval."""
    return None if n_values <= BATCH_VALUES // RESAMPLES else max(1, BATCH_VALUES // n_values)


BATCH_VALUES = 2_000_000  # values resampled per batch: 16 MB of float64


def _bootstrap(samples: Sequence[np.ndarray], statistic: Callable, confidence: float) -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning on tied data: a zero-width interval is right there
        res = stats.bootstrap(
            tuple(samples),
            statistic,
            n_resamples=RESAMPLES,
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            batch=batch(sum(len(x) for x in samples)),
            rng=np.random.default_rng(SEED),
        )
    return res.confidence_interval.low, res.confidence_interval.high


def _u_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """U(a over b) / (n_a n_b): every pair of runs, a win counting 1 and a tie 1/2."""
    return float(_Pair.of(a, b).u_fraction(np.ones(len(a)), np.ones(len(b))))


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the n runs was drawn into each resample (the last axis holds the draws)."""
    flat = idx.reshape(-1, idx.shape[-1]).astype(np.int64)
    rows = flat.shape[0]
    counts = np.bincount((flat + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n)
    return counts.reshape(*idx.shape[:-1], n).astype(float)


@dataclass(frozen=True)
class _Pair:
    """What a resample's U needs of two fixed groups: b's sorting order, and for each run of a where it
    falls among b's sorted values (below: the b runs it beats; between low and high: its ties)."""

    order: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_a: int
    n_b: int

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> _Pair:
        order = np.argsort(b, kind="stable")
        ranked = b[order]
        low, high = np.searchsorted(ranked, a, "left"), np.searchsorted(ranked, a, "right")
        return cls(order, low, high, len(a), len(b))

    def u_fraction(self, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
        """U / (n_a n_b) of resamples given by their draw counts: each drawn run of a scores the drawn runs
        of b below it plus half those equal to it (cumulative counts over b's sorted values)."""
        cumulative = np.concatenate([np.zeros((*cb.shape[:-1], 1)), np.cumsum(cb[..., self.order], axis=-1)], -1)
        below, upto = cumulative[..., self.low], cumulative[..., self.high]
        return (ca * (below + 0.5 * (upto - below))).sum(axis=-1) / (self.n_a * self.n_b)


def _pairs_statistic(pairs: list[_Pair]) -> Callable:
    """P(a > b) of resamples, averaged over ``pairs``. scipy's bootstrap resamples the runs' *indices* (the
    same draws it makes of the values), and a resample's U follows from the draw counts and the fixed order
    of the values: O(n) per resample where the table of every pair is O(n_a n_b) (at 2,500 runs per group,
    0.2 s instead of minutes); the same sums of halves, so the same numbers to the bit."""

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        values = []
        for k, pair in enumerate(pairs):
            ca = _counts(np.moveaxis(indices[2 * k], axis, -1), pair.n_a)
            cb = _counts(np.moveaxis(indices[2 * k + 1], axis, -1), pair.n_b)
            values.append(pair.u_fraction(ca, cb))
        return np.mean(values, axis=0)

    return statistic


def probability_of_improvement(a: Sequence[float], b: Sequence[float]) -> float | None:
    """P(a random run of ``a`` > a random run of ``b``), ties 1/2 (higher is better: negate both for a
    metric where lower is better)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return None
    return _u_fraction(x, y)


def poi_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE):
    """Percentile bootstrap interval of P(a > b), each group resampled on its own; None with under 2 each."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None, None
    low, high = _bootstrap((np.arange(len(x)), np.arange(len(y))), _pairs_statistic([_Pair.of(x, y)]), confidence)
    return float(low), float(high)


def _iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, 0.25, axis=axis)


def iqm(values: Sequence[float]) -> float | None:
    x = np.asarray(values, dtype=float)
    return float(_iqm(x)) if len(x) else None


def iqm_interval(values: Sequence[float], confidence: float = CONFIDENCE):
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None, None
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    low, high = _bootstrap((x,), _iqm, confidence)
    return float(low), float(high)


# -- several metrics -----------------------------------------------------------------------------------
def normalize(values: dict[str, list[float]], mode: str) -> dict[str, list[float]]:
    """One metric's values per group scaled to [0, 1] over all groups' runs, 1 the best seen (``mode``)."""
    pooled = np.concatenate([np.asarray(v, dtype=float) for v in values.values()] or [np.empty(0)])
    if len(pooled) == 0:
        return {g: [] for g in values}
    low, high = float(np.min(pooled)), float(np.max(pooled))
    span = high - low
    out = {}
    for group, v in values.items():
        x = np.asarray(v, dtype=float)
        scaled = np.full(len(x), 0.5) if span == 0 else (x - low) / span
        out[group] = list(scaled if mode == "max" else 1 - scaled)
    return out


def _stratified_iqm(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
    return _iqm(np.concatenate([np.moveaxis(c, axis, -1) for c in columns], axis=-1))


def _profile(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
    pooled = np.concatenate([np.moveaxis(c, axis, -1) for c in columns], axis=-1)
    return np.stack([np.mean(pooled > tau, axis=-1) for tau in TAUS], axis=0)


@dataclass
class GroupAggregate:
    name: str
    iqm: float | None
    iqm_low: float | None
    iqm_high: float | None
    profile: list[float] = field(default_factory=list)  # fraction of run-scores > each of TAUS
    profile_low: list[float] = field(default_factory=list)
    profile_high: list[float] = field(default_factory=list)


@dataclass
class PairAggregate:
    a: str
    b: str
    p_better: float | None  # P(a > b), averaged over the metrics
    low: float | None
    high: float | None


@dataclass
class Aggregate:
    """Groups scored over several metrics at once (``orch compare --metric a --metric b``)."""

    metrics: list[str]
    modes: list[str]
    groups: list[GroupAggregate]
    pairs: list[PairAggregate]
    taus: list[float] = field(default_factory=lambda: [float(t) for t in TAUS])
    normalization: str = "min-max over all compared runs of each metric; 1 = the best value seen"

    def to_dict(self) -> dict:
        return asdict(self)


def aggregate(
    scores: dict[str, dict[str, list[float]]],
    modes: dict[str, str],
    pairs: list[tuple[str, str]],
    confidence: float = CONFIDENCE,
) -> Aggregate:
    """``scores``: metric -> group -> the values of its finished runs; ``pairs``: the comparisons made."""
    metrics = list(scores)
    normalized = {m: normalize(scores[m], modes[m]) for m in metrics}
    names = list(dict.fromkeys(g for m in metrics for g in scores[m]))
    groups = []
    for name in names:
        columns = [np.asarray(normalized[m].get(name, []), dtype=float) for m in metrics]
        columns = [c for c in columns if len(c)]
        if not columns:
            groups.append(GroupAggregate(name, None, None, None))
            continue
        point = float(_stratified_iqm(*columns))
        profile = [float(v) for v in _profile(*columns)]
        if all(len(c) >= 2 for c in columns):
            low, high = _bootstrap(columns, _stratified_iqm, confidence)
            p_low, p_high = _bootstrap(columns, _profile, confidence)
            groups.append(
                GroupAggregate(
                    name, point, float(low), float(high), profile, [float(v) for v in p_low], [float(v) for v in p_high]
                )
            )
        else:
            groups.append(GroupAggregate(name, point, None, None, profile, profile, profile))
    out = []
    for a, b in pairs:
        columns = []
        for m in metrics:
            x, y = np.asarray(normalized[m].get(a, [])), np.asarray(normalized[m].get(b, []))
            if len(x) and len(y):
                columns += [x, y]
        if not columns:
            out.append(PairAggregate(a, b, None, None, None))
            continue
        point = float(np.mean([_u_fraction(columns[i], columns[i + 1]) for i in range(0, len(columns), 2)]))
        if all(len(c) >= 2 for c in columns):
            pairs_ = [_Pair.of(columns[i], columns[i + 1]) for i in range(0, len(columns), 2)]
            low, high = _bootstrap([np.arange(len(c)) for c in columns], _pairs_statistic(pairs_), confidence)
            out.append(PairAggregate(a, b, point, float(low), float(high)))
        else:
            out.append(PairAggregate(a, b, point, None, None))
    return Aggregate(metrics, [modes[m] for m in metrics], groups, out)
