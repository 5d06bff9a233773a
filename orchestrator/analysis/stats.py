"""Statistics across seeds, on plain arrays: nothing here knows MLflow or orch's runs. (Over 400 lines, one
concept: every test, interval and effect size `orch compare` reports, side by side so they stay consistent.)

Per group: mean, spread and two 95% intervals (Student t and bootstrap). Between two groups: Welch's t and
Mann-Whitney U always; paired t and Wilcoxon signed-rank when the groups share seeds (same seed = same
data order, same initialisation: pairing removes that shared noise). Effect sizes (Cohen's d, Hedges' g,
Cliff's delta), Holm's step-down correction across the comparisons made, and the seeds a study would
need to detect the observed effect at 80% power (noncentral t, no approximation).

Degenerate inputs (fewer than two values, zero variance) give ``None`` rather than a number: scipy
returns p = 0 for two constant groups that differ, which would read as "highly significant"."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import special, stats

from orchestrator.analysis.interval import CONFIDENCE, exact_mean, t_interval
from orchestrator.analysis.interval import finite as _clean
from orchestrator.analysis.interval import is_constant as _is_constant
from orchestrator.analysis.robust import batch  # bounded memory for large groups, scipy's own draws for small

BOOT_RESAMPLES = 9999
BOOT_SEED = 0
POWER = 0.8
MAX_SEEDS = 100_000  # beyond this "seeds needed" is reported as None: the effect is practically nil


def _num(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# -- one group ------------------------------------------------------------------------------------
@dataclass
class Summary:
    n: int
    n_nonfinite: int  # NaN/inf values left out (a diverged run still FINISHED)
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1)
    sem: float | None  # standard error of the mean
    median: float | None
    min: float | None
    max: float | None
    ci_low: float | None  # Student t interval of the mean
    ci_high: float | None
    boot_low: float | None  # bootstrap interval of the mean
    boot_high: float | None
    boot_method: str = ""  # "BCa", "percentile", or "" when no interval could be formed
    confidence: float = CONFIDENCE

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_interval(
    x: np.ndarray, confidence: float = CONFIDENCE, seed: int = BOOT_SEED, n_resamples: int = BOOT_RESAMPLES
) -> tuple[float | None, float | None, str]:
    """Bootstrap interval of the mean, seeded so that a report is reproducible. BCa (bias-corrected and
    accelerated) when it is defined, else percentile: BCa can fail on very small or tied samples."""
    if len(x) < 2:
        return None, None, ""
    if _is_constant(x):
        return float(x[0]), float(x[0]), "constant"
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning on tiny samples: checked below instead
            res = stats.bootstrap(
                (x,),
                np.mean,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                batch=batch(len(x)),
                rng=np.random.default_rng(seed),
            )
        low, high = res.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return float(low), float(high), method
    return None, None, ""


def summarize(values: Sequence[float], confidence: float = CONFIDENCE, seed: int = BOOT_SEED) -> Summary:
    raw = np.asarray(values, dtype=float)
    x = _clean(raw)
    n = len(x)
    if n == 0:
        return Summary(0, len(raw), None, None, None, None, None, None, None, None, None, None, confidence=confidence)
    std = float(np.std(x, ddof=1)) if n > 1 else None
    sem = std / math.sqrt(n) if std is not None else None
    ci_low, ci_high = t_interval(x, confidence)
    boot_low, boot_high, method = bootstrap_interval(x, confidence, seed)
    return Summary(
        n,
        len(raw) - n,
        exact_mean(x),
        std,
        sem,
        float(np.median(x)),
        float(np.min(x)),
        float(np.max(x)),
        ci_low,
        ci_high,
        boot_low,
        boot_high,
        method,
        confidence,
    )


def mean_curve(rows: Sequence[Sequence[float]], confidence: float = CONFIDENCE):
    """Per step over seeds (rows: one list per step): n, mean and t-interval, NaN-free."""
    out = []
    for row in rows:
        x = _clean(row)
        low, high = t_interval(x, confidence)
        out.append((len(x), float(np.mean(x)) if len(x) else None, low, high))
    return out


# -- effect sizes ---------------------------------------------------------------------------------
def cohens_d(a: np.ndarray, b: np.ndarray) -> float | None:
    """(mean a - mean b) / pooled standard deviation."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    pooled = math.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return None
    return float((np.mean(a) - np.mean(b)) / pooled)


def hedges_correction(df: int) -> float:
    """Exact small-sample correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))."""
    return float(math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2))


def hedges_g(a: np.ndarray, b: np.ndarray) -> float | None:
    d = cohens_d(a, b)
    return None if d is None else d * hedges_correction(len(a) + len(b) - 2)


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float | None:
    """P(a > b) - P(a < b) over all pairs: -1..1, robust to outliers and scale."""
    if len(a) == 0 or len(b) == 0:
        return None
    sign = np.sign(a[:, None] - b[None, :])
    return float(sign.mean())


# -- power ----------------------------------------------------------------------------------------
def power_t(effect: float, n: int, alpha: float, paired: bool = False) -> float:
    """Power of the two-sided t-test for a standardised effect: Cohen's d with n per group (Welch's
    test is close to Student's at equal n), or d_z = mean(diff)/sd(diff) with n pairs."""
    df = n - 1 if paired else 2 * n - 2
    ncp = effect * math.sqrt(n if paired else n / 2)
    crit = stats.t.ppf(1 - alpha / 2, df)
    power = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
    if not math.isfinite(power):  # scipy's noncentral t fails far in the tail; the normal limit is exact there
        power = stats.norm.sf(crit - ncp) + stats.norm.cdf(-crit - ncp)
    return float(power)


def seeds_needed(effect: float | None, alpha: float, power: float = POWER, paired: bool = False) -> int | None:
    """The smallest n (per group, or pairs) reaching ``power``; None for no effect or beyond MAX_SEEDS."""
    if effect is None or not math.isfinite(effect) or effect == 0:
        return None
    effect = abs(effect)
    high = 2
    while power_t(effect, high, alpha, paired) < power:  # doubling, then bisection: power grows with n
        if high >= MAX_SEEDS:
            return None
        high = min(2 * high, MAX_SEEDS)
    low = max(2, high // 2)
    while low < high:
        mid = (low + high) // 2
        if power_t(effect, mid, alpha, paired) >= power:
            high = mid
        else:
            low = mid + 1
    return low


# -- tests ----------------------------------------------------------------------------------------
@dataclass
class TestResult:
    name: str
    statistic: float | None
    pvalue: float | None
    note: str = ""


def welch(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE):
    """Welch's t-test and the interval of mean(a) - mean(b); None when undefined."""
    if len(a) < 2 or len(b) < 2:
        return TestResult("welch_t", None, None, "needs 2 values per group"), (None, None)
    if _is_constant(a) and _is_constant(b):
        return TestResult("welch_t", None, None, "both groups constant: no variance to test against"), (None, None)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return TestResult("welch_t", _num(res.statistic), _num(res.pvalue)), (_num(ci.low), _num(ci.high))


def mann_whitney(a: np.ndarray, b: np.ndarray) -> TestResult:
    if len(a) < 1 or len(b) < 1 or len(a) + len(b) < 3:
        return TestResult("mann_whitney_u", None, None, "too few values")
    if _is_constant(np.concatenate([a, b])):
        return TestResult("mann_whitney_u", None, None, "all values equal")
    res = stats.mannwhitneyu(a, b, alternative="two-sided")
    return TestResult("mann_whitney_u", _num(res.statistic), _num(res.pvalue))


def paired_t(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE):
    diff = a - b
    if len(diff) < 2:
        return TestResult("paired_t", None, None, "needs 2 shared seeds"), (None, None)
    if _is_constant(diff, scale=float(max(np.max(np.abs(a)), np.max(np.abs(b))))):
        return TestResult("paired_t", None, None, "the same difference on every seed: no variance"), (None, None)
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    return TestResult("paired_t", _num(res.statistic), _num(res.pvalue)), (_num(ci.low), _num(ci.high))


def wilcoxon(a: np.ndarray, b: np.ndarray) -> TestResult:
    diff = a - b
    if len(diff) < 2:
        return TestResult("wilcoxon", None, None, "needs 2 shared seeds")
    if np.all(diff == 0):
        return TestResult("wilcoxon", None, None, "identical on every shared seed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "exact p not possible with ties/zeros": scipy switches method itself
        res = stats.wilcoxon(a, b)
    return TestResult("wilcoxon", _num(res.statistic), _num(res.pvalue))


PERMUTATIONS = 9999  # resamples of the permutation tests; exact (every permutation) when there are fewer
PERMUTATION_SEED = 0


def _mean_difference(x, y, axis):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _mean_of_differences(x, y, axis):
    return np.mean(x - y, axis=axis)


def permutation(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Two-sided permutation test of mean(a) - mean(b), the groups' labels shuffled (scipy's
    ``permutation_test``, exact when C(n_a + n_b, n_a) <= 9999, else 9999 seeded resamples)."""
    if len(a) < 2 or len(b) < 2:
        return TestResult("permutation", None, None, "needs 2 values per group")
    if _is_constant(np.concatenate([a, b])):
        return TestResult("permutation", None, None, "all values equal")
    res = stats.permutation_test(
        (a, b),
        _mean_difference,
        permutation_type="independent",
        vectorized=True,
        n_resamples=PERMUTATIONS,
        alternative="two-sided",
        batch=batch(len(a) + len(b)),
        random_state=PERMUTATION_SEED,
    )
    return TestResult("permutation", _num(res.statistic), _num(res.pvalue))


def permutation_paired(a: np.ndarray, b: np.ndarray) -> TestResult:
    """Fisher's randomization test on shared seeds: the sign of each seed's difference flipped at random
    (scipy's ``permutation_test`` with ``permutation_type="samples"``: exact up to 13 pairs, 2^13 <= 9999)."""
    diff = a - b
    if len(diff) < 2:
        return TestResult("permutation_paired", None, None, "needs 2 shared seeds")
    if np.all(diff == 0):
        return TestResult("permutation_paired", None, None, "identical on every shared seed")
    res = stats.permutation_test(
        (a, b),
        _mean_of_differences,
        permutation_type="samples",
        vectorized=True,
        n_resamples=PERMUTATIONS,
        alternative="two-sided",
        batch=batch(2 * len(a)),
        random_state=PERMUTATION_SEED,
    )
    return TestResult("permutation_paired", _num(res.statistic), _num(res.pvalue))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family = the defined p-values; None stays None).
    p_(i) * (m - i + 1) for the i-th smallest, made monotone and capped at 1."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    defined = {i: p for i, p in enumerate(pvalues) if p is not None}
    for rank, i in enumerate(sorted(idx, key=defined.__getitem__)):
        running = max(running, min(1.0, (m - rank) * defined[i]))
        out[i] = running
    return out


@dataclass
class Comparison:
    """``a`` against ``b`` (the baseline when there is one). ``diff`` = mean(a) - mean(b)."""

    a: str
    b: str
    n_a: int
    n_b: int
    n_pairs: int
    paired: bool
    identical: bool  # the same values (seed by seed when paired): nothing to test
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    diff_low: float | None  # interval of the difference, from the primary test
    diff_high: float | None
    tests: dict[str, TestResult] = field(default_factory=dict)
    primary: str = ""  # the test whose p-value enters the Holm correction
    primary_why: str = ""  # why the primary test is not the paired t-test though the seeds pair up
    p_value: float | None = None
    p_holm: float | None = None
    significant: bool = False
    cohens_d: float | None = None
    hedges_g: float | None = None
    cliffs_delta: float | None = None
    effect_for_power: float | None = None  # d (unpaired) or d_z (paired) used for seeds_needed
    # P(a random run of a is better than a random run of b), ties 1/2, with its bootstrap interval
    # (analysis/robust.py; "better" follows the metric's mode, so it is set by compare, which knows it)
    p_better: float | None = None
    p_better_low: float | None = None
    p_better_high: float | None = None
    seeds_needed: int | None = None
    outcome: str = ""  # set with the verdict (compare.verdict)
    verdict: str = ""

    @property
    def uses_pairs(self) -> bool:
        """The primary test is one on the shared seeds' differences."""
        return self.primary in ("paired_t", "permutation_paired")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tests"] = {k: asdict(v) for k, v in self.tests.items()}
        return data


PRIMARY = ("t", "permutation")  # `orch compare --test`: which family of tests decides


def compare(
    a_name: str,
    a: Sequence[float],
    b_name: str,
    b: Sequence[float],
    seeds_a: Sequence | None = None,
    seeds_b: Sequence | None = None,
    confidence: float = CONFIDENCE,
    test: str = "t",
) -> Comparison:
    """Every test between two groups. Pairing is by seed: when the groups share at least two seeds the
    paired tests run on the shared ones and the paired t-test is the primary test (``test="permutation"``:
    Fisher's randomization test on the pairs, else the unpaired permutation test)."""
    with warnings.catch_warnings():
        # scipy's precision-loss warnings concern near-constant data, which is checked here explicitly
        warnings.simplefilter("ignore", RuntimeWarning)
        return _compare(a_name, a, b_name, b, seeds_a, seeds_b, confidence, test)


def _compare(a_name, a, b_name, b, seeds_a, seeds_b, confidence, test="t") -> Comparison:
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pairs: list[tuple[float, float]] = []
    # a seed repeated inside a group (e.g. grid points pooled by --by) leaves no one-to-one pairing
    unique = (
        seeds_a is not None
        and seeds_b is not None
        and len(set(seeds_a)) == len(seeds_a)
        and len(set(seeds_b)) == len(seeds_b)
    )
    if unique:
        by_seed_b = {s: v for s, v in zip(seeds_b, xb, strict=False) if np.isfinite(v)}
        pairs = [(v, by_seed_b[s]) for s, v in zip(seeds_a, xa, strict=False) if np.isfinite(v) and s in by_seed_b]
    xa, xb = _clean(xa), _clean(xb)
    pa, pb = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])) if pairs else (np.empty(0), np.empty(0))
    paired = len(pairs) >= 2
    mean_a = exact_mean(xa) if len(xa) else None
    mean_b = exact_mean(xb) if len(xb) else None
    identical = bool(
        len(xa)
        and len(xb)
        and (
            (paired and len(pairs) == len(xa) == len(xb) and np.all(pa == pb))
            or (_is_constant(xa) and _is_constant(xb) and xa[0] == xb[0])
        )
    )
    cmp = Comparison(
        a_name,
        b_name,
        len(xa),
        len(xb),
        len(pairs),
        paired,
        identical,
        mean_a,
        mean_b,
        None if mean_a is None or mean_b is None else mean_a - mean_b,
        None,
        None,
    )
    welch_res, welch_ci = welch(xa, xb, confidence)
    cmp.tests = {"welch_t": welch_res, "mann_whitney_u": mann_whitney(xa, xb), "permutation": permutation(xa, xb)}
    cmp.cohens_d, cmp.hedges_g, cmp.cliffs_delta = cohens_d(xa, xb), hedges_g(xa, xb), cliffs_delta(xa, xb)
    primary, ci = "welch_t", welch_ci
    if paired:
        paired_res, paired_ci = paired_t(pa, pb, confidence)
        cmp.tests["paired_t"] = paired_res
        cmp.tests["wilcoxon"] = wilcoxon(pa, pb)
        cmp.tests["permutation_paired"] = permutation_paired(pa, pb)
        diff = pa - pb
        sd = float(np.std(diff, ddof=1))
        cmp.effect_for_power = float(np.mean(diff)) / sd if sd > 0 else None
        if paired_res.pvalue is not None:
            primary, ci = "paired_t", paired_ci
        elif not identical:
            cmp.primary_why = (
                "every shared seed differs by the same amount, so the paired t-test is undefined "
                "(no spread); Welch's test on the two groups is the primary test"
            )
    if primary == "welch_t":
        cmp.effect_for_power = cmp.cohens_d
    if test == "permutation":  # the interval stays the t-test's: a permutation test gives a p-value only
        primary = "permutation_paired" if primary == "paired_t" else "permutation"
        cmp.primary_why = ""
    cmp.primary = primary
    cmp.p_value = cmp.tests[primary].pvalue
    cmp.diff_low, cmp.diff_high = ci
    return cmp


def correct(comparisons: list[Comparison], alpha: float) -> None:
    """Holm across the comparisons made (their primary p-values), then significance and seeds needed."""
    family = sum(1 for c in comparisons if c.p_value is not None)
    for cmp, adjusted in zip(comparisons, holm([c.p_value for c in comparisons]), strict=False):
        cmp.p_holm = adjusted
        cmp.significant = adjusted is not None and adjusted < alpha
        # Bonferroni's alpha/m is the bar Holm's first step sets: a fair, slightly conservative target
        cmp.seeds_needed = seeds_needed(cmp.effect_for_power, alpha / max(1, family), paired=cmp.uses_pairs)
