"""Quality: strategies paired by seed against the best exact one; the permutation test's false-alarm rate and
power, measured by simulation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstmbench.report.quality import QUALITY_ALPHA, accuracy_verdicts
from lstmbench.report.verdicts import Computes
from lstmbench.stats import below_best, seeds_needed


def _rows(accuracies: dict[str, list[float]], reached: dict[str, list[bool]] | None = None) -> pd.DataFrame:
    rows = []
    for name, values in accuracies.items():
        for seed, acc in enumerate(values):
            hit = reached[name][seed] if reached else acc >= 0.9
            rows.append({"strategy": name, "seed": seed, "eval_accuracy": acc, "target_accuracy": 0.9,
                         "time_to_target_s": 1.0 if hit else None})
    return pd.DataFrame(rows)


def _summary(ok: pd.DataFrame, exact: set[str]) -> pd.DataFrame:
    s = ok.groupby("strategy", sort=False)["eval_accuracy"].mean().reset_index()
    s["computes"] = ["exact (verified)" if n in exact else "truncates to 64 tokens" for n in s["strategy"]]
    s["computes_kind"] = [Computes.EXACT if n in exact else Computes.CHANGES for n in s["strategy"]]
    return s


def test_a_consistent_shortfall_is_marked_and_a_tie_is_not():
    ok = _rows({"mask": [0.99, 0.98, 1.0, 0.97, 0.99, 0.98], "bucket": [0.975, 0.985, 0.995, 0.97, 0.99, 0.985],
                "truncate": [0.95, 0.94, 0.95, 0.93, 0.95, 0.94]})
    v = accuracy_verdicts(ok, _summary(ok, {"mask", "bucket"}))
    assert v["mask"] == "best exact"
    assert v["truncate"].startswith("below: -0.042, p=")
    assert v["bucket"].startswith("-0.002, p=") and "(n.s.; ~" in v["bucket"]
    tie = _rows({"mask": [0.9, 0.95], "bucket": [0.9, 0.95]})
    assert accuracy_verdicts(tie, _summary(tie, {"mask", "bucket"}))["bucket"] == "+0.000 (no shortfall)"


def test_three_seeds_cannot_decide_and_say_how_many_would():
    ok = _rows({"mask": [0.99, 0.98, 1.0], "truncate": [0.95, 0.94, 0.96]})
    v = accuracy_verdicts(ok, _summary(ok, {"mask"}))
    # 2 strategies, 3 seeds: 8 arrangements, one as extreme: p = 1/8 at best, whatever the shortfall; with the
    # target tested too, each family at 0.025, which 7 seeds can reach (2^-6)
    assert v["truncate"] == "-0.040, p=0.13 (n.s.; ~7 seeds would decide)"


def test_fewer_targets_reached_are_named():
    ok = _rows({"mask": [0.95] * 6, "naive": [0.5] * 6})
    v = accuracy_verdicts(ok, _summary(ok, {"mask"}))
    assert v["naive"].startswith("below: -0.450, p=") and v["naive"].endswith("; target 0/6 vs 6/6 (fewer, p=0.017)")


def test_no_exact_strategy_no_verdicts():
    ok = _rows({"naive": [0.5, 0.6], "truncate": [0.9, 0.9]})
    assert accuracy_verdicts(ok, _summary(ok, set())) == {}


def test_false_alarms_stay_at_alpha_and_a_real_shortfall_is_found():
    """Equal strategies (seed effects shared, run noise apart), the best picked from the same runs: the chance of
    marking any strategy below it is at most QUALITY_ALPHA; a 3-point shortfall is found most of the time."""
    rng = np.random.default_rng(1)

    def alarms(drop: float, sections: int = 400, k: int = 4, seeds: int = 5) -> float:
        hits = 0
        for i in range(sections):
            values = 0.9 + rng.normal(0, 0.02, (seeds, 1)) + rng.normal(0, 0.01, (seeds, k))
            values[:, -1] -= drop
            _, _, p = below_best(values, np.ones(k, bool), permutations=400, seed=i)
            hits += bool((p < QUALITY_ALPHA).any()) if drop == 0 else bool(p[-1] < QUALITY_ALPHA)
        return hits / sections

    assert alarms(0.0) <= QUALITY_ALPHA + 3 * np.sqrt(QUALITY_ALPHA * (1 - QUALITY_ALPHA) / 400)  # 0.083: the rate plus Monte Carlo error
    assert alarms(0.03) >= 0.8


def test_below_best_on_equal_values_and_seeds_needed():
    best, short, p = below_best(np.full((4, 3), 0.9), np.array([True, True, False]))
    assert best == 0 and short.tolist() == [0.0, 0.0, 0.0] and p.tolist() == [1.0, 1.0, 1.0]
    assert seeds_needed([0.01, 0.02, 0.03]) == 4 and seeds_needed([0.02, 0.02]) == 2
    assert seeds_needed([-0.01, 0.0]) is None and seeds_needed([0.01]) is None


def test_a_seed_run_twice_pairs_through_its_latest_run():
    ok = _rows({"mask": [0.99, 0.98, 1.0, 0.97, 0.99, 0.98], "truncate": [0.95, 0.94, 0.95, 0.93, 0.95, 0.94]})
    again = ok[(ok["strategy"] == "truncate") & (ok["seed"] == 0)].assign(eval_accuracy=0.2)
    v = accuracy_verdicts(pd.concat([again, ok]), _summary(ok, {"mask"}))  # the later row (0.95) counts
    assert v["truncate"].startswith("below: -0.042")


@pytest.mark.parametrize("n", [1])
def test_one_seed_says_no_test(n):
    ok = _rows({"mask": [0.99], "truncate": [0.95]})
    assert accuracy_verdicts(ok, _summary(ok, {"mask"}))["truncate"] == "-0.040 (1 seed in common: no test)"
