"""compare: a gate with a controlled false-alarm rate and no blind spots; exit 0 / 3 / 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.results.compare import REGRESSION, compare_results
from tests.factories import GATE_ENV as ENV, write_set

G = "(AMD EPYC x2; torch 2.13.0+cpu)"


def invoke(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def test_twenty_percent_slower_is_a_regression_with_its_sentence(tmp_path):
    base = write_set(tmp_path / "base", 4, seed=0)
    slow = write_set(tmp_path / "slow", 4, seed=1, speed=48_000 * 0.8)
    r = invoke(base, slow)
    assert r.exit_code == 3, r.output
    comparison = compare_results([base], [slow])
    assert {(c.group, c.metric.name) for c in comparison.regressions} == {
        (f"packing/bucket on cpu {G}", "tokens_per_s"), (f"packing/mask on cpu {G}", "tokens_per_s")}
    bucket = comparison.regressions[0]
    assert 0.17 < -bucket.change < 0.23 and bucket.paired and bucket.tests == 4
    lines = r.stdout.splitlines()
    assert lines[0] == bucket.sentence()
    assert lines[0].startswith(f"packing/bucket on cpu {G}: tokens_per_s fell ")
    assert lines[0].endswith(" after BH over 4 tests (paired over 4 seeds)")
    assert r.stdout.rstrip().splitlines()[-2:] == [
        "Gate: 4 tests (2 of throughput and time to target, 2 of memory), corrected together (Benjamini-Hochberg): a "
        "comparison of unchanged code fails with probability at most 0.02; a regression must also exceed 5%. tokens/s "
        "changes are paired by seed (the median of each seed's window ratios). 4 accuracy checks with an absolute "
        "tolerance of 0.01; efficiency reported, not gated.",
        "2 regressions in 2 groups compared."]


def test_ordinary_runs_of_the_same_code_pass(tmp_path):
    for k in range(5):  # not one lucky pair
        pair = compare_results(write_set(tmp_path / f"a{k}", 4, 2 * k), write_set(tmp_path / f"b{k}", 4, 2 * k + 1))
        assert not pair.has_regression, [c.sentence() for c in pair.regressions]
    r = invoke(tmp_path / "a0", tmp_path / "b0")
    assert r.exit_code == 0 and r.stdout.rstrip().endswith("0 regressions in 2 groups compared.")


def test_a_faster_change_is_an_improvement(tmp_path):
    comparison = compare_results(write_set(tmp_path / "a", 4, 0), write_set(tmp_path / "b", 4, 1, speed=60_000))
    assert not comparison.has_regression
    assert {c.verdict for c in comparison.changes if c.metric.name == "tokens_per_s"} == {"improvement"}


def test_too_few_seeds_is_exit_2_with_how_many_are_needed(tmp_path):
    r = invoke(write_set(tmp_path / "a", 2, 0), write_set(tmp_path / "b", 2, 1, speed=30_000))
    assert r.exit_code == 2
    assert r.stderr == ("Error: too few runs to test anything: at most 2 seed(s) a side, and a test needs 3; a 20% "
                        "slowdown is found 19 times in 20 with 4 seeds a side on a quiet machine (docs/commands.md, the gate's rates), so run "
                        "both sets with --set 'seeds=[0,1,2,3]'\n")


def test_three_seeds_can_find_a_clear_slowdown(tmp_path):
    comparison = compare_results(write_set(tmp_path / "a", 3, 0, speeds=[48_000, 48_500, 47_600]),
                                 write_set(tmp_path / "b", 3, 1, speeds=[38_400, 38_800, 38_100]))
    (change,) = [c for c in comparison.regressions if c.group.startswith("packing/mask")]
    assert change.paired and change.p_adjusted < 0.05 and change.change == pytest.approx(-0.2, abs=0.01)


def test_the_window_median_shrugs_off_a_disturbed_stretch(tmp_path):
    """One current run lost half its speed for 2 of its 8 windows (another job on the machine): its run
    tokens/s fell ~22%, but the per-seed ratio is the median over the windows, so it is not a regression."""
    a, b = write_set(tmp_path / "a", 4, 0, strategies=("mask",)), write_set(tmp_path / "b", 4, 0, strategies=("mask",))
    rows = [json.loads(line) for line in (b / "rows.jsonl").read_text().splitlines()]
    w = rows[0]["window_tokens_per_s"]
    rows[0]["window_tokens_per_s"] = [x / 2 if i < 2 else x for i, x in enumerate(w)]
    rows[0]["tokens_per_s"] = 8 / sum(1 / x for x in rows[0]["window_tokens_per_s"])
    (b / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    comparison = compare_results(a, b)
    (tps,) = [c for c in comparison.changes if c.metric.name == "tokens_per_s"]
    assert abs(tps.change) < 0.01 and not comparison.has_regression


def test_memory_rising_is_a_regression(tmp_path):
    comparison = compare_results([write_set(tmp_path / "a", 4, 0)],
                                 [write_set(tmp_path / "b", 4, 1, memory=480 * 2**20)])
    (mem,) = [c for c in comparison.regressions if c.group.startswith("packing/mask")]
    assert mem.metric.name == "peak_mem_bytes" and mem.verdict == REGRESSION
    assert mem.sentence().startswith(f"packing/mask on cpu {G}: peak_mem_bytes rose 2")
    assert " MiB -> " in mem.sentence()


def test_accuracy_has_an_absolute_tolerance(tmp_path):
    """0.99 -> 0.945 is under the 5% relative threshold, but 4.5 points of accuracy: a regression."""
    comparison = compare_results([write_set(tmp_path / "a", 3, 0)], [write_set(tmp_path / "b", 3, 1, accuracy=0.945)])
    sentences = [c.sentence() for c in comparison.regressions if c.metric.name == "eval_accuracy"]
    assert sentences[0] == (f"packing/bucket on cpu {G}: eval_accuracy fell by 0.045 (0.990 -> 0.945), more than "
                            "the tolerance 0.01")
    within = compare_results([write_set(tmp_path / "c", 3, 0)], [write_set(tmp_path / "d", 3, 1, accuracy=0.985)])
    assert not [c for c in within.regressions if c.metric.family == "quality"]


def test_a_strategy_with_no_ok_run_now_is_a_regression(tmp_path):
    base = write_set(tmp_path / "a", 4, 0, strategies=("bucket", "pack"))
    cur = write_set(tmp_path / "b", 4, 1, strategies=("bucket", "pack"), failed=("pack",))
    r = invoke(base, cur)
    assert r.exit_code == 3
    assert r.stdout.splitlines()[0] == f"packing/pack on cpu {G}: 4 ok run(s) in the baseline, none now: 4 failed (oom)"
    gone = write_set(tmp_path / "c", 4, 1, strategies=("bucket",))
    assert compare_results(base, gone).lost == [f"packing/pack on cpu {G}: 4 ok run(s) in the baseline, none now: "
                                                "no run at all"]


def test_a_target_no_longer_reached_is_a_regression(tmp_path):
    base = write_set(tmp_path / "a", 4, 0, time_to_target=2.0, target=0.9)
    cur = write_set(tmp_path / "b", 4, 1, time_to_target=[2.0, None, 2.0, None], target=0.9)
    comparison = compare_results(base, cur)
    assert comparison.lost == [
        f"packing/{s} on cpu {G}: reached accuracy 0.9 in 4 of 4 runs in the baseline, 2 of 4 now (seeds 1, 3 no "
        "longer reach it)" for s in ("bucket", "mask")]
    (ttt,) = [c for c in comparison.changes if c.metric.name == "time_to_target_s" and "bucket" in c.group]
    assert len(ttt.baseline) == 2 and not ttt.testable  # the two seeds that reached it on both sides


def test_other_hardware_or_torch_is_never_compared(tmp_path):
    base = write_set(tmp_path / "a", 4, 0)
    cur = write_set(tmp_path / "b", 4, 1, speed=30_000, env={**ENV, "torch": "2.14.1+cpu"})
    r = invoke(base, cur)
    assert r.exit_code == 2
    assert r.stderr == ("Error: nothing to compare: no group (suite, strategy, device, hardware, torch) has "
                        f"successful runs in both {base} and {cur}\n")


def test_configuration_change_is_noted(tmp_path):
    comparison = compare_results(write_set(tmp_path / "a", 4, 0), write_set(tmp_path / "b", 4, 1, suite_hash="def"))
    assert comparison.notes()[0] == (f"packing/bucket on cpu {G}: the suite's configuration differs between the two "
                                     "sets (baseline abc, current def): a change may come from the suite, not the code")


def test_one_alpha_governs_every_test(tmp_path):
    base, slow = write_set(tmp_path / "a", 3, 0), write_set(tmp_path / "b", 3, 1, speed=48_000 * 0.9)
    loose = compare_results(base, slow, alpha=0.05)
    strict = compare_results(base, slow, alpha=1e-9)
    assert loose.has_regression and not strict.has_regression
    assert "at most 1e-09" in strict.design()
    r = invoke(base, slow, "--alpha", "0")
    assert r.exit_code == 2 and "--alpha" in r.stderr


def test_bad_input_is_exit_2(tmp_path):
    r = invoke(tmp_path / "nope", tmp_path)
    assert (r.exit_code, r.stderr) == (2, f"Error: {tmp_path / 'nope'}: no such file or folder\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    r = invoke(bad, bad)
    assert (r.exit_code, r.stderr) == (2, f"Error: no result rows in 1 file(s) under {bad} (1 line(s) skipped; the "
                                          f"first: {bad}:1: not an lstmbench result row (no schema_version or "
                                          "strategy); skipped)\n")
    only_failed = write_set(tmp_path / "failed", 3, 0, failed=("bucket", "mask"))
    r = invoke(write_set(tmp_path / "ok", 3, 0), only_failed)
    assert (r.exit_code, r.stderr) == (2, f"Error: {only_failed}: no successful run (status ok) among 6 rows\n")


def test_world_sizes_and_sweep_points_are_compared_only_with_their_own(tmp_path):
    """A suite swept over launch.nproc holds 1-process and 2-process rows of one strategy: a 2-process row must
    never be judged against a 1-process baseline, or a sweep point against another."""
    for side, ddp_speed in (("base", 48_000.0), ("cur", 48_000.0 * 0.7)):
        folder = write_set(tmp_path / side, 4, seed=0, strategies=("bucket",))
        with open(folder / "rows.jsonl") as f:
            single = [json.loads(line) for line in f]
        ddp = [{**r, "world_size": 2, "sweep": {"launch.nproc": 2}, "tokens_per_s": ddp_speed * (1 + 0.01 * i),
                "window_tokens_per_s": []} for i, r in enumerate(single)]
        single = [{**r, "sweep": {"launch.nproc": 1}} for r in single]
        (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in single + ddp))
    comparison = compare_results([tmp_path / "base"], [tmp_path / "cur"])
    groups = sorted({c.group for c in comparison.changes})
    assert groups == [f"packing/bucket on cpu [launch.nproc=1] {G}", f"packing/bucket on cpu [launch.nproc=2, 2 ranks] {G}"]
    (regression,) = [c for c in comparison.regressions if c.metric.name == "tokens_per_s"]
    assert regression.group == groups[1] and -regression.change > 0.25


def test_a_row_whose_seed_is_not_an_integer_is_skipped_with_a_warning(tmp_path):
    base = write_set(tmp_path / "a", 3, 0)
    cur = write_set(tmp_path / "b", 3, 1)
    rows = [json.loads(line) for line in (cur / "rows.jsonl").read_text().splitlines()]
    rows[0]["seed"] = "x"
    (cur / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = invoke(base, cur)
    assert r.stderr.splitlines()[0] == f'Warning: current: {cur / "rows.jsonl"}:1: seed is "x", not an integer; skipped'
    assert r.exit_code == 0, r.output


def _with_schema(folder: Path, version: int) -> Path:
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps({**json.loads(line), "schema_version": version}) + "\n"
                            for line in path.read_text().splitlines()))
    return folder


def test_rows_of_schemas_whose_figures_mean_different_things_are_not_gated(tmp_path):
    """Schema 2 timed warm-up shapes in train_time_s (3 did not): a 20% 'slowdown' between them is no verdict."""
    base = _with_schema(write_set(tmp_path / "base", 4, seed=0), 2)
    slow = _with_schema(write_set(tmp_path / "slow", 4, seed=1, speed=48_000 * 0.8), 5)
    r = invoke(base, slow)
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines() == [
        "Warning: tokens_per_s, peak_mem_bytes, eval_accuracy_exact not compared in 2 group(s) "
        "(packing/bucket, packing/mask): the baseline's rows are schema 2 and the current's 5, and these figures "
        "changed meaning between them (docs/schema.md); measure the baseline again",
        "Error: nothing compared in 2 group(s): the two sets' rows are of schemas whose figures mean different "
        "things; measure the baseline again."]
    # from schema 3 on, throughput means the same: it is gated (and the slowdown found); memory is not
    r = invoke(_with_schema(base, 3), slow)
    assert r.exit_code == 3, r.output
    assert r.stderr.startswith("Warning: peak_mem_bytes, eval_accuracy_exact not compared in 2 group(s)")
