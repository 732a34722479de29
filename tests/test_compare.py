"""compare: regressions need size and significance, each metric in its own direction; exit 0 / 3 / 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.compare import REGRESSION, compare_results
from lstmbench.records import RunRecord


def write_set(folder: Path, n: int, seed: int, speed: float = 48_000.0, memory: float = 400 * 2**20,
              accuracy: float = 0.99, noise: float = 0.03, strategies=("bucket", "mask"), speeds=None,
              suite_hash: str = "abc", time_to_target=None, failed=()) -> Path:
    """n runs of each strategy, numbers drawn around the given medians with `noise` relative spread (or tokens/s
    exactly `speeds`); the strategies in `failed` get n rows that ran out of memory instead."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.jsonl", "w") as f:
        for s in range(n):
            for name in strategies:
                jitter = 1 + noise * rng.uniform(-1, 1) if speeds is None else speeds[s] / speed
                r = RunRecord(suite="packing", suite_hash=suite_hash, strategy=name, batching="random",
                              padding="batch", readout="mask", max_len=0, computation_note="", device="cpu", seed=s,
                              status="ok", tokens_per_s=speed * jitter, samples_per_s=speed * jitter / 40,
                              peak_mem_bytes=int(memory * (1 + 0.01 * rng.uniform(-1, 1))),
                              eval_accuracy=accuracy, eval_accuracy_exact=accuracy,
                              time_to_target_s=None if time_to_target is None else time_to_target * jitter)
                if name in failed:
                    r = RunRecord(suite="packing", suite_hash=suite_hash, strategy=name, batching="random",
                                  padding="batch", readout="mask", max_len=0, computation_note="", device="cpu",
                                  seed=s, status="oom", error="CUDA out of memory")
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
    for k in range(1, 5):  # not one lucky pair: other draws of the same code pass too
        pair = compare_results(write_set(tmp_path / f"a{k}", 6, 2 * k), write_set(tmp_path / f"b{k}", 6, 2 * k + 1))
        assert not pair.has_regression, [c.sentence() for c in pair.regressions]


def test_a_fast_change_is_an_improvement_not_a_regression(tmp_path):
    comparison = compare_results([write_set(tmp_path / "a", 6, 0)], [write_set(tmp_path / "b", 6, 1, speed=60_000)])
    assert not comparison.has_regression
    assert {c.verdict for c in comparison.changes if c.metric == "tokens_per_s"} == {"improvement"}


def test_two_seeds_are_never_a_regression_three_need_disjoint_intervals(tmp_path):
    """Decision: below 3 runs a side nothing is called significant. The percentile bootstrap interval of two
    values' median is their range, and two ranges drawn from one distribution are disjoint 1 time in 3; with 3
    a side it is 1 in 10 (a one-sided Mann-Whitney at 0.05), so from 3 runs disjoint intervals count."""
    two = compare_results([write_set(tmp_path / "a", 2, 0, speeds=[48_000, 48_500])],
                          [write_set(tmp_path / "b", 2, 1, speeds=[38_400, 38_800])])
    (change,) = [c for c in two.changes if (c.strategy, c.metric) == ("mask", "tokens_per_s")]
    assert change.change < -0.19 and change.disjoint and change.p_value > 0.05 and change.too_few_runs
    assert change.verdict == "not significant" and change.significant_by == "" and not two.has_regression
    r = invoke(tmp_path / "a", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [
        f"Warning: packing/{s} on cpu: fewer than 3 runs on a side; its changes are shown but none is called "
        "significant (use 3 or more seeds, 4 or more for Mann-Whitney to reach p < 0.05)" for s in ("bucket", "mask")]
    assert "| not significant (too few runs) |" in r.stdout

    three = compare_results([write_set(tmp_path / "c", 3, 0, speeds=[48_000, 48_500, 47_600])],
                            [write_set(tmp_path / "d", 3, 1, speeds=[38_400, 38_800, 38_100])])
    (change,) = [c for c in three.regressions if (c.strategy, c.metric) == ("mask", "tokens_per_s")]
    assert change.p_value == pytest.approx(0.1) and change.significant_by == "bootstrap intervals disjoint"
    assert change.sentence() == ("packing/mask on cpu: tokens_per_s fell 20.0% (48,000 -> 38,400), "
                                 "bootstrap 95% intervals disjoint")
    noisy = compare_results([write_set(tmp_path / "e", 3, 0, speeds=[40_000, 56_000, 48_000])],
                            [write_set(tmp_path / "f", 3, 1, speeds=[38_000, 42_000, 50_000])])
    (change,) = [c for c in noisy.changes if (c.strategy, c.metric) == ("mask", "tokens_per_s")]
    assert change.change < -0.12 and not change.disjoint and change.verdict == "not significant"


def test_exact_output_of_a_regression(tmp_path):
    base = write_set(tmp_path / "base", 6, 0, speeds=[48_000, 47_500, 48_600, 49_100, 47_200, 48_300])
    slow = write_set(tmp_path / "slow", 6, 1, speeds=[38_300, 38_900, 37_800, 38_600, 39_200, 38_100])
    r = invoke(base, slow)
    assert r.exit_code == 3 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[:5] == [
        "packing/bucket on cpu: tokens_per_s fell 20.1% (48,150 -> 38,450), p=0.0022",
        "packing/bucket on cpu: samples_per_s fell 20.1% (1,204 -> 961), p=0.0022",
        "packing/mask on cpu: tokens_per_s fell 20.1% (48,150 -> 38,450), p=0.0022",
        "packing/mask on cpu: samples_per_s fell 20.1% (1,204 -> 961), p=0.0022",
        "",
    ]
    assert ("| packing/bucket on cpu | tokens_per_s        | 6 / 6  | 48,150     | 38,450    | -20.1%   | 0.0022 "
            "| disjoint    | regression |") in lines
    assert lines[-1] == "4 regressions in 2 groups compared (threshold 5%, alpha 0.05)."


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


def test_failed_runs_configuration_changes_and_time_to_target(tmp_path):
    base = write_set(tmp_path / "a", 4, 0, strategies=("bucket", "pack"), time_to_target=2.0)
    cur = write_set(tmp_path / "b", 4, 1, strategies=("bucket", "pack"), failed=("pack",), suite_hash="def")
    comparison = compare_results(base, cur)
    assert comparison.notes() == [
        "packing/pack on cpu: only in the baseline; the current set has 4 failed run(s) (oom)",
        "packing/bucket on cpu: the suite's configuration differs between the two sets (baseline abc, current def): "
        "a change may come from the suite, not the code",
    ]
    assert "time_to_target_s" not in {c.metric for c in comparison.changes}  # null in the current rows
    both = compare_results(base, write_set(tmp_path / "c", 4, 1, strategies=("bucket",), time_to_target=3.0))
    (ttt,) = [c for c in both.regressions if c.metric == "time_to_target_s"]
    assert ttt.sentence().startswith("packing/bucket on cpu: time_to_target_s rose ")
    assert " s -> " in ttt.sentence()


def test_bad_input_is_exit_2(tmp_path):
    r = invoke(tmp_path / "nope", tmp_path)
    assert (r.exit_code, r.stderr) == (2, f"Error: {tmp_path / 'nope'}: no such file or folder\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    r = invoke(bad, bad)
    assert (r.exit_code, r.stderr) == (2, f"Error: {bad}:1: not an lstmbench result row\n")
    only_failed = write_set(tmp_path / "failed", 3, 0, failed=("bucket", "mask"))
    r = invoke(write_set(tmp_path / "ok", 3, 0), only_failed)
    assert (r.exit_code, r.stderr) == (2, f"Error: {only_failed}: no successful run (status ok) among 6 rows\n")
    a = write_set(tmp_path / "x", 3, 0, strategies=("bucket",))
    b = write_set(tmp_path / "y", 3, 0, strategies=("pack",))
    r = invoke(a, b)
    assert (r.exit_code, r.stderr) == (2, "Error: nothing to compare: no (suite, strategy, device) has successful "
                                          f"runs in both {a} and {b}\n")


def test_world_sizes_and_sweep_points_are_compared_only_with_their_own(tmp_path):
    """A suite swept over launch.nproc holds 1-process and 2-process rows of one strategy: a 2-process row must
    never be judged against a 1-process baseline, or a sweep point against another."""
    for side, ddp_speed in (("base", 48_000.0), ("cur", 48_000.0 * 0.7)):
        folder = write_set(tmp_path / side, 6, seed=0, strategies=("bucket",))
        with open(folder / "rows.jsonl") as f:
            single = [json.loads(line) for line in f]
        ddp = [{**r, "world_size": 2, "sweep": {"launch.nproc": 2}, "tokens_per_s": ddp_speed * (1 + 0.01 * i)}
               for i, r in enumerate(single)]
        single = [{**r, "sweep": {"launch.nproc": 1}} for r in single]
        (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in single + ddp))
    comparison = compare_results([tmp_path / "base"], [tmp_path / "cur"])
    groups = sorted({c.group for c in comparison.changes})
    assert groups == ["packing/bucket on cpu [launch.nproc=1]", "packing/bucket on cpu [launch.nproc=2, 2 ranks]"]
    (regression,) = [c for c in comparison.regressions if c.metric == "tokens_per_s"]
    assert regression.group == "packing/bucket on cpu [launch.nproc=2, 2 ranks]" and -regression.change > 0.25
