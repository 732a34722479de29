"""compare: regressions need size and significance, each metric in its own direction; exit 0 / 3 / 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.compare import REGRESSION, compare_results
from lstmbench.records import RunRecord


def write_set(folder: Path, n: int, seed: int, speed: float = 48_000.0, memory: float = 400 * 2**20,
              accuracy: float = 0.99, noise: float = 0.03, strategies=("bucket", "mask"), speeds=None) -> Path:
    """n runs of each strategy, numbers drawn around the given medians with `noise` relative spread."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.jsonl", "w") as f:
        for s in range(n):
            for name in strategies:
                jitter = 1 + noise * rng.uniform(-1, 1) if speeds is None else speeds[s] / speed
                r = RunRecord(suite="packing", suite_hash="abc", strategy=name, batching="random", padding="batch",
                              readout="mask", max_len=0, computation_note="", device="cpu", seed=s, status="ok",
                              tokens_per_s=speed * jitter, samples_per_s=speed * jitter / 40,
                              peak_mem_bytes=int(memory * (1 + 0.01 * rng.uniform(-1, 1))),
                              eval_accuracy=accuracy, eval_accuracy_exact=accuracy)
                f.write(json.dumps(r.to_dict()) + "\n")
    return folder


def invoke(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def test_twenty_percent_slower_with_enough_seeds_is_a_regression(tmp_path):
    base = write_set(tmp_path / "base", 6, seed=0)
    slow = write_set(tmp_path / "slow", 6, seed=1, speed=48_000 * 0.8)
    r = invoke(base, slow)
    assert r.exit_code == 3, r.output
    lines = r.stdout.splitlines()
    comparison = compare_results([base], [slow])
    regressions = {(c.strategy, c.metric) for c in comparison.regressions}
    assert regressions == {("bucket", "tokens_per_s"), ("bucket", "samples_per_s"),
                           ("mask", "tokens_per_s"), ("mask", "samples_per_s")}
    bucket = next(c for c in comparison.regressions if (c.strategy, c.metric) == ("bucket", "tokens_per_s"))
    assert lines[0] == bucket.sentence()
    assert lines[0] == (f"packing/bucket on cpu: tokens_per_s fell {abs(bucket.change):.1%} "
                        f"({bucket.base_median:,.0f} -> {bucket.current_median:,.0f}), p=0.0022")
    assert 0.17 < -bucket.change < 0.23
    assert r.stdout.rstrip().endswith("4 regressions in 2 groups compared (threshold 5%, alpha 0.05).")


def test_two_ordinary_runs_of_the_same_code_pass(tmp_path):
    r = invoke(write_set(tmp_path / "a", 6, seed=0), write_set(tmp_path / "b", 6, seed=1))
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().endswith("0 regressions in 2 groups compared (threshold 5%, alpha 0.05).")
    assert "| regression" not in r.stdout


def test_a_fast_change_is_an_improvement_not_a_regression(tmp_path):
    comparison = compare_results([write_set(tmp_path / "a", 6, 0)], [write_set(tmp_path / "b", 6, 1, speed=60_000)])
    assert not comparison.has_regression
    assert {c.verdict for c in comparison.changes if c.metric == "tokens_per_s"} == {"improvement"}


def test_two_seeds_need_disjoint_intervals(tmp_path):
    """Two runs a side can never give p < 0.05; a 20% slowdown with clearly separated values is still caught
    by disjoint bootstrap intervals, and a noisy one is not."""
    base = write_set(tmp_path / "a", 2, 0, noise=0.02)
    comparison = compare_results([base], [write_set(tmp_path / "b", 2, 1, speed=38_400, noise=0.02)])
    (change,) = [c for c in comparison.regressions if (c.strategy, c.metric) == ("mask", "tokens_per_s")]
    assert change.p_value > 0.05 and change.disjoint
    assert change.sentence().endswith(", bootstrap 95% intervals disjoint")
    assert any("fewer than 4 runs on a side" in n for n in comparison.notes())
    noisy = compare_results([write_set(tmp_path / "c", 2, 0, speeds=[40_000, 56_000])],
                            [write_set(tmp_path / "d", 2, 1, speeds=[38_000, 42_000])])
    (change,) = [c for c in noisy.changes if (c.strategy, c.metric) == ("mask", "tokens_per_s")]
    assert change.change < -0.15 and not change.disjoint and change.verdict == "not significant"


def test_memory_rising_is_a_regression(tmp_path):
    comparison = compare_results([write_set(tmp_path / "a", 6, 0)],
                                 [write_set(tmp_path / "b", 6, 1, memory=480 * 2**20)])
    (mem,) = [c for c in comparison.regressions if c.strategy == "mask"]
    assert mem.metric == "peak_mem_bytes" and mem.verdict == REGRESSION
    assert mem.sentence().startswith("packing/mask on cpu: peak_mem_bytes rose 2")
    assert " MiB -> " in mem.sentence()


def test_accuracy_drop_is_a_regression(tmp_path):
    comparison = compare_results([write_set(tmp_path / "a", 6, 0)], [write_set(tmp_path / "b", 6, 1, accuracy=0.8)])
    metrics = {(c.strategy, c.metric) for c in comparison.regressions}
    assert ("mask", "eval_accuracy") in metrics and ("mask", "eval_accuracy_exact") in metrics
    sentence = next(c.sentence() for c in comparison.regressions if c.metric == "eval_accuracy")
    assert sentence == "packing/bucket on cpu: eval_accuracy fell 19.2% (0.990 -> 0.800), p=0.0013"


def test_groups_on_one_side_are_listed_not_regressions(tmp_path):
    base = write_set(tmp_path / "a", 6, 0, strategies=("bucket", "mask"))
    cur = write_set(tmp_path / "b", 6, 1, strategies=("mask", "pack"))
    r = invoke(base, cur)
    assert r.exit_code == 0
    assert "Note: packing/bucket on cpu: only in the baseline" in r.stdout
    assert "Note: packing/pack on cpu: only in the current set" in r.stdout


def test_bad_input_is_exit_2(tmp_path):
    r = invoke(tmp_path / "nope", tmp_path)
    assert (r.exit_code, r.stderr) == (2, f"Error: {tmp_path / 'nope'}: no such file or folder\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    r = invoke(bad, bad)
    assert (r.exit_code, r.stderr) == (2, f"Error: {bad}:1: not an lstmbench result row\n")
