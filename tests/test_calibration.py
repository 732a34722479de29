"""The gate's rates, measured: A/A (same code twice: how often does compare cry wolf?) and A/B (a 20% slowdown:
how often is it caught?), on result sets resampled from the real rows committed in results/packing.

Method. Each real run of the committed suite is split into noise components (logarithms, throughput):
- a run effect: the log of the run's median window throughput minus the median of that over the strategy's
  seeds (what a process, its memory layout and the machine's state do to a whole run), and
- window residuals: each window's log throughput minus the log of its run's median window (interference that
  hits part of a run, and the batch mix of each window).
A resampled run of strategy k is the strategy's median throughput times a run effect and 8 window residuals
drawn with replacement from the pooled components of all strategies (peak memory and time to target likewise
from their own run effects). Baseline and current draw independently, so the batch-mix part of the window
residuals counts as noise too: the rates below are for a noisier machine than the real pairs, conservative
for false alarms and pessimistic for detection. Accuracy is deterministic per seed on CPU: equal on both sides.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstmbench import storage
from lstmbench.compare import compare_frames

RESULTS = Path(__file__).parent.parent / "results" / "packing"
ENV = {"cpu": "AMD EPYC", "cpu_count": 2, "device_name": "cpu", "torch": "2.13.0+cpu"}
PAIRS = 300  # a false-alarm rate of 1 in 50 is then estimated to about +-1.6% (two standard errors)


def _real_components() -> dict:
    rows = storage.load_rows([RESULTS]).rows
    rows = rows[(rows["status"] == "ok") & (rows["schema_version"] >= 2)]
    assert len(rows) >= 12, "results/packing holds no measured rows with windows (schema 2)"
    centre, run_effects, residuals, mem, mem_effects, ttt, ttt_effects = {}, [], [], {}, [], {}, []
    for name, runs in rows.groupby("strategy"):
        level = np.array([np.log(np.median(w)) for w in runs["window_tokens_per_s"]])
        centre[name] = float(np.median(level))
        run_effects += list(level - centre[name])
        for w, lvl in zip(runs["window_tokens_per_s"], level):
            residuals += list(np.log(w) - lvl)
        log_mem = np.log(runs["peak_mem_bytes"].astype(float))
        mem[name] = float(np.median(log_mem))
        mem_effects += list(log_mem - mem[name])
        reached = pd.to_numeric(runs["time_to_target_s"], errors="coerce").dropna()
        if len(reached) == len(runs):  # strategies whose every run reached the target
            ttt[name] = float(np.median(np.log(reached)))
            ttt_effects += list(np.log(reached) - ttt[name])
    return dict(centre=centre, run=np.array(run_effects), window=np.array(residuals), mem=mem,
                mem_run=np.array(mem_effects), ttt=ttt, ttt_run=np.array(ttt_effects))


def _resampled_set(c: dict, seeds: int, rng: np.random.Generator, slowdown: float = 1.0) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        for name, level in c["centre"].items():
            run = rng.choice(c["run"])
            windows = np.exp(level + run + rng.choice(c["window"], 8)) * slowdown
            rows.append({
                "suite": "packing", "suite_hash": "h", "strategy": name, "device": "cpu", "seed": seed,
                "status": "ok", "env": ENV, "target_accuracy": 0.9, "eval_accuracy": 0.99,
                "eval_accuracy_exact": 0.99, "window_tokens_per_s": list(windows),
                "tokens_per_s": float(8 / np.sum(1 / windows)),
                "peak_mem_bytes": float(np.exp(c["mem"][name] + rng.choice(c["mem_run"]))),
                "time_to_target_s": float(np.exp(c["ttt"][name] - run) / slowdown) if name in c["ttt"] else None,
            })
    return pd.DataFrame(rows)


def _rates(c: dict, seeds: int, slowdown: float, rng: np.random.Generator) -> tuple[float, float]:
    """(share of comparisons that fail, share of strategies' throughput called a regression)."""
    failed = called = tested = 0
    for _ in range(PAIRS):
        comparison = compare_frames(_resampled_set(c, seeds, rng), _resampled_set(c, seeds, rng, slowdown))
        failed += comparison.has_regression
        tps = [ch for ch in comparison.changes if ch.metric.name == "tokens_per_s"]
        called += sum(ch.verdict == "regression" for ch in tps)
        tested += len(tps)
    return failed / PAIRS, called / tested


@pytest.fixture(scope="module")
def components() -> dict:
    return _real_components()


@pytest.mark.parametrize("seeds", [3, 4])
def test_a_a_false_alarm_rate_on_real_noise(components, seeds):
    """Same code twice: the whole suite's comparison fails at most 1 time in 50."""
    false_alarms, _ = _rates(components, seeds, 1.0, np.random.default_rng(seeds))
    print(f"A/A, {seeds} seeds: {false_alarms:.1%} of {PAIRS} comparisons failed")
    assert false_alarms <= 1 / 50


def test_a_b_detection_of_a_twenty_percent_slowdown_on_real_noise(components):
    """Every strategy 20% slower (a slower code path), 4 seeds a side (the nightly suite's count): the
    comparison fails at least 19 times in 20."""
    detected, per_strategy = _rates(components, 4, 0.8, np.random.default_rng(7))
    print(f"A/B, 4 seeds: {detected:.1%} of comparisons failed; {per_strategy:.1%} of strategies' throughput flagged")
    assert detected >= 19 / 20


def test_a_b_detection_per_strategy_on_a_quiet_machine():
    """One strategy 20% slower, 4 seeds a side, on a machine with 2% run-to-run and 3% window noise (a
    dedicated GPU runner): that strategy's throughput is flagged at least 19 times in 20."""
    quiet = dict(centre={"bucket": np.log(8e5), "mask": np.log(2e5)}, run=np.random.default_rng(0).normal(0, 0.02, 999),
                 window=np.random.default_rng(1).normal(0, 0.03, 999), mem={"bucket": 30.0, "mask": 30.0},
                 mem_run=np.zeros(1), ttt={}, ttt_run=np.zeros(1))
    _, per_strategy = _rates(quiet, 4, 0.8, np.random.default_rng(3))
    _, false_calls = _rates(quiet, 4, 1.0, np.random.default_rng(4))
    print(f"quiet machine, 4 seeds: 20% drop flagged {per_strategy:.1%}; no change flagged {false_calls:.1%}")
    assert per_strategy >= 19 / 20 and false_calls <= 1 / 50
