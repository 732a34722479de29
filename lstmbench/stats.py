"""Statistics: intervals for the median that cover what they claim, the regression test, multiple testing.

Intervals for the median of run values are distribution-free (order statistics): for n values, the interval
[x_(k), x_(n+1-k)] covers the true median with probability 1 - 2 P(Binomial(n, 1/2) <= k - 1), whatever the
distribution (skewed, heavy-tailed). 95% needs n >= 6; with fewer runs the widest interval is the range, which
covers 1 - 2 * 0.5^n of the time (75% at 3, 87.5% at 4), and is called the range. tests/test_stats.py checks
the coverage by simulation.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

UNSTABLE_IQR = 0.10  # IQR/median above this marks a throughput as unstable (torch.utils.benchmark, pyperf)
CONFIDENCE = 0.95  # the only level an interval is labelled with; below it, the range is shown as the range


@dataclass(frozen=True)
class Spread:
    n: int
    median: float
    low: float  # smallest value
    high: float  # largest value
    iqr_rel: float  # interquartile range / median

    @property
    def unstable(self) -> bool:
        return self.n >= 3 and self.iqr_rel > UNSTABLE_IQR


def spread(values: Sequence[float]) -> Spread:
    a = _finite(values)
    if a.size == 0:
        return Spread(0, float("nan"), float("nan"), float("nan"), float("nan"))
    q1, med, q3 = np.quantile(a, [0.25, 0.5, 0.75])
    return Spread(int(a.size), float(med), float(a.min()), float(a.max()), float((q3 - q1) / med) if med else 0.0)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = _finite(values)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


@dataclass(frozen=True)
class Interval:
    """An interval for the median of run values, and the probability with which it covers it."""
    n: int
    median: float
    low: float
    high: float
    coverage: float  # guaranteed for n independent runs of a continuous distribution

    @property
    def is_ci(self) -> bool:
        """Reaches CONFIDENCE: it may be called a 95% confidence interval. Else it is the range."""
        return self.coverage >= CONFIDENCE

    @property
    def kind(self) -> str:
        return f"{CONFIDENCE:.0%} CI" if self.is_ci else "range"

    def text(self, fmt: str = ",.0f") -> str:
        """'42,256 [range 42,138-44,047]', '42,256 [95% CI 41,900-44,047]', '42,256' for one run, '-' for none."""
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.median:{fmt}} (1 run)"
        return f"{self.median:{fmt}} [{self.kind} {self.low:{fmt}}-{self.high:{fmt}}]"


@functools.lru_cache(maxsize=None)
def order_coverage(n: int, k: int) -> float:
    """P(x_(k) <= median <= x_(n+1-k)) for n independent draws of a continuous distribution."""
    return float(1 - 2 * sps.binom.cdf(k - 1, n, 0.5))


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The narrowest order-statistic interval whose coverage reaches `confidence`; the range when none does."""
    a = np.sort(_finite(values))
    n = int(a.size)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, 0.0)
    k = 1
    while k + 1 <= (n + 1) // 2 and order_coverage(n, k + 1) >= confidence:
        k += 1
    return Interval(n, float(np.median(a)), float(a[k - 1]), float(a[n - k]), order_coverage(n, k) if n > 1 else 0.0)


def stable(values: Sequence[float], tolerance: float, min_runs: int) -> bool:
    """`--until-stable`: at least `min_runs` values, and their median's interval (the range below 6 runs,
    the 95% CI from 6) within +-tolerance (a fraction) of the median."""
    iv = median_interval(values)
    return iv.n >= min_runs and iv.median * (1 - tolerance) <= iv.low and iv.high <= iv.median * (1 + tolerance)


def runs_for_ci(confidence: float = CONFIDENCE) -> int:
    """The fewest runs whose range covers the median with `confidence` (6 for 95%)."""
    return next(n for n in range(2, 100) if order_coverage(n, 1) >= confidence)


def log_ratio_test(baseline: Sequence[float], current: Sequence[float], paired: bool,
                   higher_is_better: bool) -> float:
    """One-sided p-value that `current` is worse than `baseline` (a t-test on the logarithms: a relative
    change, the same whatever the unit). Paired: one log ratio per seed, df = n - 1. Else Welch's test.
    Values that do not vary give p = 0 for any move in the wrong direction and 1 otherwise."""
    b, c = np.log(np.asarray(baseline, float)), np.log(np.asarray(current, float))
    diff = c - b if paired else None
    worse = (lambda x: x < 0) if higher_is_better else (lambda x: x > 0)
    shift = float(diff.mean()) if paired else float(c.mean() - b.mean())
    spread_ = float(diff.std(ddof=1)) if paired else float(np.hypot(b.std(ddof=1) / math.sqrt(b.size),
                                                                      c.std(ddof=1) / math.sqrt(c.size)))
    if not spread_ > 0:
        return 0.0 if worse(shift) else 1.0
    alternative = "less" if higher_is_better else "greater"
    if paired:
        return float(sps.ttest_1samp(diff, 0.0, alternative=alternative).pvalue)
    return float(sps.ttest_ind(c, b, equal_var=False, alternative=alternative).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: rejecting those below alpha keeps the chance of any false alarm
    among all the tests at most alpha, whatever their dependence."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (scipy): flagging those below alpha keeps the expected share of false
    flags among the flagged at most alpha; when nothing changed (every flag false) that is the chance of any
    flag at all, as with Holm, but a change that slows many strategies is found far more often."""
    if not len(pvalues):
        return []
    return [float(x) for x in sps.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")]


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    return a[np.isfinite(a)]



def below_best(values: np.ndarray, eligible: np.ndarray, permutations: int = 4000,
               seed: int = 0) -> tuple[int, np.ndarray, np.ndarray]:
    """Which columns (strategies) fall below the best eligible one, rows being seeds (paired: one seed's values
    share initial weights and data). The best is the eligible column of highest mean; each other column's
    shortfall is the best's mean minus its own. Adjusted p-values by Westfall and Young's step-down maxT over
    permutations of each seed's values across the columns (under "these strategies do not differ" their labels
    are exchangeable within a seed): the largest shortfall is tested against the largest that shuffled data
    gives, the best picked afresh each time, then set aside, and the next tested among the columns left, so a
    far-off strategy does not mask a nearer one. Picking the best from the same data is inside the permuted
    statistic, so the chance of marking any strategy below it by accident stays at the level asked
    (tests/test_quality.py measures it). Returns (best column, shortfalls, adjusted p-values; the best's 1)."""
    values = np.asarray(values, float)
    eligible = np.asarray(eligible, bool)
    means = values.mean(axis=0)
    best = int(np.flatnonzero(eligible)[np.argmax(means[eligible])])
    seen = means[best] - means
    rows, cols = values.shape
    rng = np.random.default_rng(seed)
    keys = rng.random((permutations, rows, cols))  # sorting them shuffles each seed on its own
    tol = 1e-12 * max(1.0, float(np.abs(values).max()))  # float noise in equal means is no shortfall
    p = np.ones(cols)
    left = list(range(cols))
    running = 0.0
    for j in sorted((c for c in range(cols) if c != best), key=lambda c: -seen[c]):
        kept = np.array(left)
        sub = values[:, kept]
        shuffled = np.take_along_axis(np.broadcast_to(sub, (permutations, rows, len(kept))),
                                      np.argsort(keys[:, :, :len(kept)], axis=2), axis=2)
        m = shuffled.mean(axis=1)
        largest = m[:, eligible[kept]].max(axis=1) - m.min(axis=1)
        running = max(running, (1 + int((largest >= seen[j] - tol).sum())) / (1 + permutations))
        p[j] = running  # never below an earlier, larger shortfall's
        left.remove(j)
    return best, seen, p


def seeds_needed(diffs: Sequence[float], alpha: float = 0.05, power: float = 0.8, most: int = 1000) -> int | None:
    """Seeds a paired one-sided t-test at `alpha` needs to find a shortfall of the size seen (the mean of `diffs`,
    with their spread) `power` of the time (the noncentral t); None when there is no shortfall to find or it
    would take more than `most`."""
    d = np.asarray(diffs, float)
    if d.size < 2 or not d.mean() > 0:
        return None
    sd = d.std(ddof=1)
    if not sd > 0:
        return 2
    effect = d.mean() / sd

    def enough(n: int) -> bool:
        return sps.nct.sf(sps.t.ppf(1 - alpha, n - 1), n - 1, effect * math.sqrt(n)) >= power

    high = 2
    while not enough(high):  # doubling, then bisection: power grows with n
        if high >= most:
            return None
        high = min(2 * high, most)
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high if high == 2 or not enough(low) else low
