"""Statistics over seeds."""
from __future__ import annotations

import numpy as np
import pytest

from lstmbench.stats import bootstrap_ci, mann_whitney, mean_std, spread


def test_spread_and_instability():
    s = spread([100, 110, 90])
    assert (s.n, s.median, s.low, s.high) == (3, 100, 90, 110)
    assert s.iqr_rel == pytest.approx(0.10) and not s.unstable
    assert spread([100, 130, 80]).unstable
    assert not spread([100, 200]).unstable  # two values: no quartiles worth the name


def test_mean_std():
    assert mean_std([0.9, 1.0]) == pytest.approx((0.95, 0.0707106), rel=1e-5)
    assert mean_std([0.5]) == (0.5, 0.0)


def test_bootstrap_ci_is_deterministic_and_brackets_the_median():
    rng = np.random.default_rng(1)
    values = rng.normal(100, 5, size=8)
    low, high = bootstrap_ci(values)
    assert (low, high) == bootstrap_ci(values)
    assert low < np.median(values) < high
    assert bootstrap_ci([3.0]) == (3.0, 3.0) and bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert all(np.isnan(bootstrap_ci([])))


def test_mann_whitney():
    assert mann_whitney([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]) == pytest.approx(2 / 924)
    rng = np.random.default_rng(0)
    assert mann_whitney(rng.normal(0, 1, 20), rng.normal(0, 1, 20)) > 0.2
    assert mann_whitney([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)  # three a side can never reach 0.05


def test_bootstrap_interval_of_two_or_three_values_is_their_range():
    """Why compare needs 3 runs a side: with 2, two draws of one distribution give disjoint intervals 1 time in 3."""
    assert bootstrap_ci([10.0, 12.0]) == (10.0, 12.0)
    assert bootstrap_ci([10.0, 12.0, 11.0]) == (10.0, 12.0)
    assert bootstrap_ci([10.0, float("nan"), 12.0]) == (10.0, 12.0)  # missing values are dropped
