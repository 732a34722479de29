"""Statistics over seeds: medians and spread for speed, mean and standard deviation for accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

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
