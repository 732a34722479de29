"""A busy machine: the disturbance reading of every run, the runs measured again, and recommend, compare and the
report leaving out what a busy machine measured, with a sentence and exit 2 where too little is left."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.measure.disturbance import (
    BUSY_SHARE,
    WAIT_SHARE,
    Disturbance,
    SchedTimes,
    judge,
    parse_schedstat,
    sched_times,
    settle,
    wait_share,
)
from lstmbench.report.recommendation import recommend_rows
from lstmbench.results.rows import rows_frame
from lstmbench.run import runner
from tests.conftest import write_suite
from tests.factories import CLEAR, ENV, write_set

ROOT = Path(__file__).resolve().parent.parent
HAS_SCHEDSTAT = sched_times() is not None


def test_schedstat_lines_parse():
    assert parse_schedstat("123 456 7\n") == (123, 456)
    assert parse_schedstat("x 1 2") is None and parse_schedstat("") is None


def test_the_wait_share_is_the_queued_part_of_what_the_threads_wanted():
    ms = 1_000_000  # schedstat counts nanoseconds
    start = SchedTimes({1: (1_000 * ms, 100 * ms), 2: (500 * ms, 0)})
    end = SchedTimes({1: (9_000 * ms, 2_100 * ms), 2: (6_500 * ms, 0), 3: (500 * ms, 500 * ms)})  # 3: born meanwhile
    share, seconds = wait_share(start, end)
    assert share == round(2_500 / (8_000 + 6_000 + 500 + 2_500), 4) and seconds == 2.5
    assert wait_share(None, end) == (None, None) and wait_share(start, start) == (None, None)


@pytest.mark.skipif(not HAS_SCHEDSTAT, reason="the kernel keeps no per-thread scheduler statistics")
def test_this_process_has_a_reading():
    times = sched_times()
    assert threading_id() in times.threads and times.threads[threading_id()][0] > 0


def threading_id() -> int:
    import threading

    return threading.get_native_id()


@pytest.mark.parametrize("env, extra, verdict", [
    ({"run_wait_share": 0.01, "other_cpu_share": 0.02}, {}, Disturbance.QUIET),
    ({"run_wait_share": WAIT_SHARE + 0.01, "other_cpu_share": 0.0}, {}, Disturbance.DISTURBED),
    ({"run_wait_share": None, "other_cpu_share": BUSY_SHARE + 0.01}, {}, Disturbance.DISTURBED),
    ({"run_wait_share": WAIT_SHARE}, {}, Disturbance.QUIET),  # at the threshold is still quiet
    # threads=1 beside a spinner on the other core: the run's threads never queued, and it ran as fast as alone
    ({"run_wait_share": 0.004, "other_cpu_share": 0.5}, {}, Disturbance.QUIET),
    ({}, {}, Disturbance.UNREAD),  # a row from before the readings
    # the run's own DataLoader workers queue its threads: only the other processes' share can say
    ({"run_wait_share": 0.4, "other_cpu_share": 0.01}, {"loader_workers": 2}, Disturbance.QUIET),
    ({"run_wait_share": 0.4, "other_cpu_share": 0.4}, {"world_size": 2}, Disturbance.NOT_JUDGED),
])
def test_judge(env, extra, verdict):
    assert judge({"env": env, **extra}) is verdict


def test_settle_waits_for_a_quiet_look_and_no_longer_than_asked():
    clock = iter(range(100))
    looks = iter([0.5, 0.4, 0.02])
    settled = settle(lambda s: next(looks), max_s=10, now=lambda: float(next(clock)))
    assert settled.fields() == {"settle_wait_s": 3.0, "other_cpu_share_before": 0.02}
    clock = iter(range(100))
    busy = settle(lambda s: 0.9, max_s=4, now=lambda: float(next(clock)))
    assert busy.fields() == {"settle_wait_s": 5.0, "other_cpu_share_before": 0.9}  # gave up after 4 s


def busy_rows(disturbed: dict[str, list[int]]) -> list[dict]:
    """The clear recommendation's rows (test_recommend.CLEAR), with these strategies' seeds measured while
    another process held a core."""
    rows = copy.deepcopy(CLEAR)
    for row in rows:
        if row["seed"] in disturbed.get(row["strategy"], []):
            row["env"] = {**ENV, "run_wait_share": 0.31, "other_cpu_share": 0.33}
    return rows


def test_recommend_decides_on_the_quiet_runs_and_names_the_left_out():
    rec, = recommend_rows(rows_frame(busy_rows({"mask": [1]})))
    assert rec.winner == "bucket-mask" and rec.disturbed == [("mask", 1)] and not rec.too_busy


def test_recommend_names_no_winner_with_too_few_quiet_runs(tmp_path):
    rows = busy_rows({"bucket-mask": [0, 2], "mask": [1]})
    rec, = recommend_rows(rows_frame(rows))
    assert rec.winner is None and rec.too_busy
    assert rec.undecided == (
        "the results cannot decide: 3 of 15 runs were measured while other processes took the CPU, which leaves too "
        "few quiet runs of bucket-mask (at least 2, and half of its runs); run the suite again on a quieter machine "
        "(`lstmbench run SUITE --resume --out FOLDER` measures the left-out runs again)")
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(main, ["recommend", str(folder)])
    assert r.exit_code == 2, r.output
    assert ("  Left out: 3 runs measured while other processes took the CPU (`lstmbench report` says by how much): "
            "bucket-mask seeds 0, 2; mask seed 1") in r.stdout.splitlines()
    assert r.stderr == ("Error: no recommendation for 1 of 1 section(s): too few runs were measured on a quiet "
                        "machine.\n")


def test_compare_leaves_the_busy_runs_out_and_says_so(tmp_path):
    busy = {**ENV, "run_wait_share": 0.35, "other_cpu_share": 0.36}
    base = write_set(tmp_path / "base", 4, seed=0, env={"cpu": "AMD EPYC", "cpu_count": 2, "device_name": "cpu",
                                                          "torch": "2.13.0+cpu", "git_commit": "abc1234"})
    loaded = write_set(tmp_path / "loaded", 4, seed=1, speed=48_000 * 0.3, env={
        "cpu": "AMD EPYC", "cpu_count": 2, "device_name": "cpu", "torch": "2.13.0+cpu", "git_commit": "abc1234",
        **{k: busy[k] for k in ("run_wait_share", "other_cpu_share")}})
    r = CliRunner().invoke(main, ["compare", str(base), str(loaded)])
    assert r.exit_code == 2, r.output  # not 3: a background process is not a regression
    warnings = [line for line in r.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings[0].startswith("Warning: current: 8 of 8 runs left out, measured while other processes took the "
                                  "CPU (their timings would measure the load): bucket seeds 0, 1, 2, 3; mask seeds "
                                  "0, 1, 2, 3; the first: bucket seed 0: the run's threads waited for a CPU 35% of "
                                  "the time; other processes used 36% of the CPU during the run (2 cores)")
    assert warnings[1].startswith("Warning: no verdict for 2 group(s), too few of their runs measured on a quiet "
                                  "machine: packing/bucket, packing/mask; ")
    assert r.stderr.splitlines()[-1] == ("Error: no verdict for 2 group(s): too few runs were measured on a quiet "
                                         "machine.")


def test_a_disturbed_run_is_run_again_and_the_row_says_so(tmp_path, tiny_dict, monkeypatch):
    """Through `lstmbench run`: the first attempt judged disturbed, the second quiet; then a run disturbed in
    every attempt, kept as measured and named."""
    tiny_dict.update(seeds=[0], strategies=["mask"], ideal=False)
    suite = write_suite(tmp_path, tiny_dict)
    verdicts = iter([Disturbance.DISTURBED, Disturbance.QUIET])
    monkeypatch.setattr(runner, "judge", lambda row: next(verdicts))
    r = CliRunner().invoke(main, ["run", str(suite), "--inline", "--out", str(tmp_path / "a"), "--settle", "0"])
    assert r.exit_code == 0, r.output
    row, = [json.loads(line) for f in (tmp_path / "a" / "tiny").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert row["disturbance"] == "quiet" and len(row["disturbed_attempts"]) == 1
    assert set(row["disturbed_attempts"][0]) == {"tokens_per_s", "run_wait_share", "other_cpu_share"}
    assert "    run again 1 time: other processes took the CPU; this attempt was quiet" in r.stderr.splitlines()

    monkeypatch.setattr(runner, "judge", lambda row: Disturbance.DISTURBED)
    r = CliRunner().invoke(main, ["run", str(suite), "--inline", "--out", str(tmp_path / "b"), "--settle", "0",
                                  "--rerun-disturbed", "1"])
    assert r.exit_code == 0, r.output
    row, = [json.loads(line) for f in (tmp_path / "b" / "tiny").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert row["disturbance"] == "disturbed" and len(row["disturbed_attempts"]) == 1
    assert any(line.startswith("    run again 1 time: other processes took the CPU, and again in this attempt: ")
               and line.endswith("; the report, recommend and compare leave this row out")
               for line in r.stderr.splitlines()), r.stderr


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstmbench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(not HAS_SCHEDSTAT, reason="the kernel keeps no per-thread scheduler statistics")
@pytest.mark.slow
def test_a_spinning_process_never_changes_the_answer_silently(tmp_path, tiny_dict):
    """The issue's experiment, scaled down: the same suite quiet, then with a plain `while True: pass` at normal
    priority for the whole run. Every row of 0.05 s of timed steps or more has a reading; on the loaded rows,
    `recommend` names the quiet winner or none, with a sentence about the load; `compare` names the load."""
    tiny_dict.update(seeds=[0, 1, 2], strategies=["naive", "mask", "pack"])
    suite = write_suite(tmp_path, tiny_dict)
    quiet = run_cli("run", str(suite), "--out", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = run_cli("run", str(suite), "--out", str(tmp_path / "loaded"), "--rerun-disturbed", "1",
                         "--settle", "0.3")
    finally:
        spin.kill()
        spin.wait()
    assert loaded.returncode == 0, loaded.stderr
    for side in ("quiet", "loaded"):
        rows = [json.loads(line) for f in (tmp_path / side / "tiny").glob("*.jsonl")
                for line in f.read_text().splitlines()]
        assert len(rows) == 12
        timed = [r for r in rows if r["train_time_s"] >= 0.05]
        assert all(isinstance(r["env"]["run_wait_share"], float) for r in timed), side
    loaded_rows = [json.loads(line) for f in (tmp_path / "loaded" / "tiny").glob("*.jsonl")
                   for line in f.read_text().splitlines()]
    assert any(r["disturbance"] == "disturbed" or r["disturbed_attempts"] for r in loaded_rows)

    said_quiet = run_cli("recommend", str(tmp_path / "quiet" / "tiny"))
    said_loaded = run_cli("recommend", str(tmp_path / "loaded" / "tiny"))
    winner = [line for line in said_quiet.stdout.splitlines() if line.startswith("  Recommended: ")]
    if said_loaded.returncode == 2:
        assert "were measured while other processes took the CPU" in said_loaded.stdout
        assert "  Left out: " in said_loaded.stdout
    else:  # enough attempts were quiet: the same answer as on the quiet machine
        assert said_loaded.returncode == 0, said_loaded.stderr
        assert [line for line in said_loaded.stdout.splitlines() if line.startswith("  Recommended: ")] == winner

    compared = run_cli("compare", str(tmp_path / "quiet" / "tiny"), str(tmp_path / "loaded" / "tiny"))
    assert "measured while other processes took the CPU" in compared.stderr, compared.stderr
    assert compared.returncode in (0, 2), compared.stderr  # never 3: the load is not a regression
    assert os.path.exists(tmp_path / "loaded" / "tiny")


def test_a_niced_process_is_no_reason_to_wait(monkeypatch):
    """The look before a run leaves out niced processes' CPU (/proc/stat's nice column): they yield to the run."""
    from lstmbench.measure import machine

    stats = iter([machine.CpuTimes(busy=0, total=0, nice=0), machine.CpuTimes(busy=100, total=200, nice=100)])
    monkeypatch.setattr(machine, "cpu_times", lambda: next(stats))
    monkeypatch.setattr(machine, "own_cpu_seconds", lambda: 0.0)
    monkeypatch.setattr(machine.time, "sleep", lambda s: None)
    assert machine.look_at_others(0.1) == 0.0
