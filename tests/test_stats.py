"""stats: intervals that cover what they claim (checked by simulation), the one-sided test, Holm."""
from __future__ import annotations

import numpy as np
import pytest

from lstmbench.measure.loop import WINDOWS
from lstmbench.stats import holm, log_ratio_test, mean_std, median_interval, order_coverage, runs_for_ci, spread

REPS = 4000  # a coverage of 0.95 is then estimated to +-0.007 (two standard errors)


def test_spread_and_mean_std():
    s = spread([100.0, 110.0, 90.0, 200.0])
    assert (s.n, s.median, s.low, s.high) == (4, 105.0, 90.0, 200.0)
    assert s.unstable
    assert mean_std([0.9, 1.0]) == pytest.approx((0.95, 0.0707), abs=1e-4)


def test_the_interval_is_the_range_below_six_runs_and_says_so():
    assert runs_for_ci() == 6
    three = median_interval([42_138.0, 44_047.0, 42_256.0])
    assert (three.low, three.median, three.high, three.kind) == (42_138.0, 42_256.0, 44_047.0, "range")
    assert three.coverage == pytest.approx(0.75)
    assert three.text() == "42,256 [range 42,138-44,047]"
    assert median_interval([1.0, 2.0, 3.0, 4.0]).coverage == pytest.approx(0.875)
    six = median_interval([5.0, 1.0, 3.0, 2.0, 6.0, 4.0])
    assert six.kind == "95% CI" and (six.low, six.high) == (1.0, 6.0) and six.coverage == pytest.approx(0.96875)
    ten = median_interval(list(range(1, 11)))  # k = 2: x_(2)..x_(9), coverage 97.9%
    assert (ten.low, ten.high, ten.kind) == (2.0, 9.0, "95% CI") and ten.coverage == pytest.approx(0.97852, abs=1e-4)
    assert median_interval([7.0]).text() == "7 (1 run)" and median_interval([]).text() == "-"
    assert median_interval([1.0, float("nan"), 3.0]).n == 2  # missing values are dropped


def _run_values(rng, runs: int, kind: str) -> np.ndarray:
    """`runs` runs' tokens/s, each the tokens over the time of WINDOWS windows: a run effect (the process, the
    machine's state) times window noise, as the suites' rows are made."""
    if kind == "lognormal":  # skewed
        effect = rng.lognormal(0, 0.15, runs)
    elif kind == "heavy":  # heavy-tailed: Student t with 2 degrees of freedom
        effect = np.exp(0.05 * rng.standard_t(2, runs))
    elif kind == "disturbed":  # a quiet machine, but 1 run in 5 shares its cores with another job
        effect = np.where(rng.random(runs) < 0.2, 0.6, 1.0) * rng.lognormal(0, 0.02, runs)
    else:
        raise ValueError(kind)
    window_seconds = rng.lognormal(0, 0.05, (runs, WINDOWS)) / effect[:, None]  # equal tokens a window
    return WINDOWS / window_seconds.sum(axis=1)


@pytest.mark.parametrize("kind", ["lognormal", "heavy", "disturbed"])
@pytest.mark.parametrize("n", [3, 4, 6, 10])
def test_coverage_of_the_printed_interval_by_simulation(kind, n):
    """The interval printed for n seeds covers the true median of run throughput at least as often as it
    says (within simulation error), for skewed, heavy-tailed and disturbed machines."""
    rng = np.random.default_rng([n, len(kind)])
    truth = float(np.median(_run_values(rng, 400_000, kind)))
    hits, stated = 0, set()
    for _ in range(REPS):
        interval = median_interval(_run_values(rng, n, kind))
        stated.add(round(interval.coverage, 6))
        hits += interval.low <= truth <= interval.high
    (coverage,) = stated
    assert coverage == pytest.approx(order_coverage(n, 1 if n < 10 else 2))
    error = 3 * np.sqrt(coverage * (1 - coverage) / REPS)
    assert hits / REPS >= coverage - error, (kind, n, hits / REPS, coverage)
    if kind != "disturbed":  # a continuous distribution: the stated rate is exact, not just a lower bound
        assert hits / REPS <= coverage + error, (kind, n, hits / REPS, coverage)
    assert (coverage >= 0.95) == (n >= 6)  # only then is it labelled "95% CI"


@pytest.mark.parametrize("n", [3, 4, 6])
def test_coverage_under_drift(n):
    """Runs made one after another on a machine that slows 10% over the suite: the interval still covers the
    median of what the machine gave over the suite's time."""
    rng = np.random.default_rng(n)
    drift = lambda t: 1 - 0.10 * t  # noqa: E731
    t_all = rng.random(400_000)
    truth = float(np.median(drift(t_all) * rng.lognormal(0, 0.03, t_all.size)))
    t_runs = (np.arange(n) + 0.5) / n
    hits = 0
    for _ in range(REPS):
        interval = median_interval(drift(t_runs) * rng.lognormal(0, 0.03, n))
        hits += interval.low <= truth <= interval.high
    assert hits / REPS >= order_coverage(n, 1) - 3 * np.sqrt(0.25 / REPS)


def test_log_ratio_test_is_one_sided_in_the_metric_direction():
    base = [100.0, 102.0, 98.0, 101.0]
    slow = [80.0, 83.0, 79.0, 80.5]
    assert log_ratio_test(base, slow, paired=True, higher_is_better=True) < 1e-3
    assert log_ratio_test(base, slow, paired=True, higher_is_better=False) > 0.99  # less memory is no regression
    assert log_ratio_test(base, slow, paired=False, higher_is_better=True) < 1e-3
    assert log_ratio_test([5.0, 5.0, 5.0], [6.0, 6.0, 6.0], True, False) == 0.0  # no spread: a sure change
    assert log_ratio_test([5.0, 5.0, 5.0], [5.0, 5.0, 5.0], True, False) == 1.0


def test_holm_matches_the_step_down_procedure():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5]
    assert holm([0.9, 0.9]) == [1.0, 1.0]
