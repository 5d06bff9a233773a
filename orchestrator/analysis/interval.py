"""A group's mean and Student-t interval with numpy and scipy.special only: what a parent run's aggregates
need when its seeds finish (``driver.log_aggregates``), without scipy.stats' 1.2 s import that every
``orch submit`` paid at its end. ``stats.py`` builds on these; the interval is computed as
``scipy.stats.t.interval`` computes it, to the last bit (tests/test_stats.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

CONFIDENCE = 0.95


def exact_mean(x) -> float:
    """The mean from an exactly rounded sum: independent of the order of the values, so two groups
    holding the same seeds' values in another order have exactly the same mean (a difference of 0,
    not 1e-17)."""
    return math.fsum(float(v) for v in x) / len(x)


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def is_constant(x: np.ndarray, scale: float = 0.0) -> bool:
    """No spread beyond rounding: a shift of 0.3 added to the same seeded noise gives differences that
    vary in the 16th digit, and a t-test on those reports p < 1e-16 from pure rounding error."""
    if len(x) == 0:
        return False
    tol = 64 * np.finfo(float).eps * max(float(np.max(np.abs(x))), scale)
    return bool(np.ptp(x) <= tol)


def t_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """mean +- t_{n-1} * SE. A constant sample has a zero-width interval, a single value none."""
    if len(x) < 2:
        return None, None
    if is_constant(x):
        return float(x[0]), float(x[0])
    loc, scale, df = np.mean(x), np.std(x, ddof=1) / np.sqrt(len(x)), len(x) - 1
    # scipy.stats.t.interval: ppf of each tail (t's ppf is special.stdtrit) * scale + loc
    low = special.stdtrit(df, (1 - confidence) / 2) * scale + loc
    high = special.stdtrit(df, (1 + confidence) / 2) * scale + loc
    return float(low), float(high)


def aggregates(metric: str, values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """A group's values as MLflow metrics on its parent run (sortable in the UI): ``<metric>_mean``,
    ``_std``, ``_ci_low``, ``_ci_high``, ``_n`` of the finite values."""
    x = finite(values)
    if len(x) == 0:
        return {f"{metric}_n": 0.0}
    std = float(np.std(x, ddof=1)) if len(x) > 1 else None
    ci_low, ci_high = t_interval(x, confidence)
    summary = {"mean": exact_mean(x), "std": std, "ci_low": ci_low, "ci_high": ci_high, "n": len(x)}
    return {f"{metric}_{k}": float(v) for k, v in summary.items() if v is not None and math.isfinite(v)}
