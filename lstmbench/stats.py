"""Statistics over seeds: medians and spread for speed, mean and standard deviation for accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

UNSTABLE_IQR = 0.10  # IQR/median above this marks a throughput as unstable (torch.utils.benchmark, pyperf)


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
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return Spread(0, float("nan"), float("nan"), float("nan"), float("nan"))
    q1, med, q3 = np.quantile(a, [0.25, 0.5, 0.75])
    return Spread(int(a.size), float(med), float(a.min()), float(a.max()), float((q3 - q1) / med) if med else 0.0)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def bootstrap_ci(values: Sequence[float], statistic=np.median, confidence: float = 0.95,  # noqa: ANN001
                 n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (scipy.stats.bootstrap).

    Percentile, not BCa: BCa needs a jackknife that degenerates for 3-5 seeds. 2000 resamples keep the
    interval's ends stable to about a percent; the fixed seed makes the same rows give the same report."""
    a = np.asarray(values, dtype=float)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    if a.size == 1 or np.all(a == a[0]):
        return float(a[0]), float(a[0])
    res = sps.bootstrap((a,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                        method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value (asv's test): no normality assumed, exact for small samples."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return float("nan")
    return float(sps.mannwhitneyu(x, y, alternative="two-sided").pvalue)
