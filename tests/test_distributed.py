"""DDP on CPU: 2 processes over gloo, started by torchrun (both ways a user does it), on long-tailed data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lstmbench.data.make import make_data
from lstmbench.measure.model import model_for, weights_checksum
from lstmbench.suite.load import suite_from_dict
from tests.conftest import write_suite

DDP = {
    "name": "ddp",
    "seeds": [0],
    "threads": 1,  # one per rank on any machine, so both launch modes compute the same floats
    "ideal": False,
    "data": {"source": "synthetic", "train_size": 256, "eval_size": 64, "vocab_size": 16,
             "lengths": {"dist": "lognormal", "median": 12, "sigma": 1.2, "min": 2, "max": 240}},
    "model": {"embed_dim": 8, "hidden_size": 16},
    "train": {"batch_size": 8, "epochs": 2, "lr": 0.01, "warmup_steps": 2, "eval_every": 8},
    "launch": {"nproc": 2},
    "strategies": ["bucket", {"name": "bucket-balanced", "batching": "bucket", "padding": "batch",
                              "readout": "pack", "deal": "balanced"}, "mask"],
}


def torchrun(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def lstmbench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstmbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def rows_in(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.rglob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def under_torchrun(tmp_path_factory):
    """`torchrun --nproc-per-node 2 -m lstmbench run SUITE`: every run of the suite in one DDP job."""
    tmp = tmp_path_factory.mktemp("ddp")
    suite = write_suite(tmp, DDP)
    done = torchrun("-m", "lstmbench", "run", str(suite), "--out", str(tmp / "results"), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp, sorted(rows_in(tmp / "results"), key=lambda r: r["strategy"]), done  # runs come shuffled


@pytest.mark.slow
def test_rows_from_both_ranks_are_consistent(under_torchrun):
    tmp, rows, done = under_torchrun
    assert len(list((tmp / "results" / "ddp").glob("*.jsonl"))) == 1  # rank 0 alone writes
    assert [r["strategy"] for r in rows] == ["bucket", "bucket-balanced", "mask"]
    assert done.stdout.count("rows appended") == 1  # rank 1 prints nothing
    suite = suite_from_dict(DDP)
    train = make_data(suite.data, 0).train
    checksum = weights_checksum(model_for(suite.model, train, 0))
    for r in rows:
        assert r["status"] == "ok" and r["world_size"] == 2 and r["threads"] == 1
        assert r["init_checksum"] == checksum  # the same start as a single-process run of the seed
        assert len(r["rank_step_time_median_s"]) == len(r["rank_compute_time_s"]) == 2
        assert sum(r["rank_padded_tokens"]) == r["padded_tokens"] and min(r["rank_padded_tokens"]) > 0
        # a rank computes within the timed steps it waited through: the raw time (first shapes at their cost)
        assert all(0 < c < r["train_time_cold_s"] for c in r["rank_compute_time_s"])
        # both ranks' tokens together: every training example exactly once per epoch
        assert r["real_tokens"] == int(train.lengths.sum()) * 2
        assert 0 <= r["straggler_wait_fraction"] < 1 and 0 <= r["planned_wait_fraction"] < 1
        assert 0.5 <= r["eval_accuracy"] <= 1
    assert rows[0]["deal"] == "per_rank" and rows[1]["deal"] == "balanced"


def test_balanced_dealing_waits_less_for_the_straggler(under_torchrun):
    _, rows, _ = under_torchrun
    per_rank, balanced = rows[0], rows[1]
    assert balanced["planned_wait_fraction"] < per_rank["planned_wait_fraction"] / 2
    assert balanced["straggler_wait_fraction"] < per_rank["straggler_wait_fraction"]  # measured


@pytest.mark.slow
def test_nproc_runs_each_run_as_its_own_torchrun_job_and_agrees(under_torchrun, tmp_path):
    """`lstmbench run SUITE --nproc 2`: the same training, bit for bit, as the run under the user's torchrun."""
    _, rows, _ = under_torchrun
    suite = write_suite(tmp_path, {**DDP, "launch": {"nproc": 1}, "strategies": ["bucket"]})
    done = lstmbench("run", str(suite), "--nproc", "2", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = rows_in(tmp_path / "r")
    assert row["world_size"] == 2 and row["config"]["launch"] == {"nproc": 2, "backend": "auto"}
    for key in ("final_loss", "eval_accuracy", "eval_accuracy_exact", "real_tokens", "padded_tokens", "steps"):
        assert row[key] == rows[0][key], key
    assert "2 ranks waiting" in done.stderr


@pytest.mark.slow
def test_report_shows_the_straggler_columns(under_torchrun):
    tmp, _, _ = under_torchrun
    done = lstmbench("report", str(tmp / "results"), cwd=tmp)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("| strategy"))
    assert "| ranks | deal | straggler wait % | planned wait % |" in " ".join(header.split())
    assert (tmp / "results" / "ddp" / "report" / "straggler.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_verify_checks_the_distributed_forms(tmp_path):
    suite = write_suite(tmp_path, DDP)
    done = lstmbench("verify", str(suite), cwd=tmp_path)  # launch.nproc 2: the distributed check runs too
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("Distributed forms on 2 ranks (gloo)")[1]
    for name, deal in (("bucket", "per_rank"), ("bucket-balanced", "balanced"), ("mask", "per_rank")):
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == deal and cells[5] == "yes" and cells[6] == "equivalent"
        assert float(cells[3]) < 1e-12 and float(cells[4]) < 1e-10
    assert "3 of 3 distributed forms equal one process on the union of their batches." in done.stdout


def break_rank_1(tmp_path: Path, action: str = "raise RuntimeError('injected failure')") -> dict:
    """An environment whose rank 1 runs `action` at its eighth training step (warm-up included), while rank 0
    waits in the all-reduce."""
    return in_ranks(tmp_path,
                    "if os.environ.get('RANK') == '1':\n"
                    "    from lstmbench.measure.loop import SEAMS\n"
                    "    real, calls = SEAMS.step, []\n"
                    "    def step(*a, **k):\n"
                    "        calls.append(1)\n"
                    "        if len(calls) == 8:\n"
                    f"            {action}\n"
                    "        return real(*a, **k)\n"
                    "    SEAMS.step = step\n")


def in_ranks(tmp_path: Path, code: str) -> dict:
    """An environment that runs `code` (after `import os, signal`) in every Python process it starts: a
    sitecustomize, so nothing in lstmbench knows of it."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import os, signal\n" + code)
    return {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_a_rank_that_fails_ends_the_job_with_a_row_not_a_hang(tmp_path):
    """torchrun stops the job, the row says why (rank 1's error, not rank 0's lost peer), the suite goes on."""
    suite = write_suite(tmp_path, {**DDP, "strategies": ["mask"]})
    started = time.monotonic()
    done = lstmbench("run", str(suite), "--out", str(tmp_path / "r"), cwd=tmp_path, env=break_rank_1(tmp_path))
    assert time.monotonic() - started < 120
    assert done.returncode == 1, done.stderr
    (row,) = rows_in(tmp_path / "r")
    assert row["status"] == "error" and row["world_size"] == 2
    assert row["error"].startswith("RuntimeError: injected failure")
    assert done.stderr.endswith("Error: 1 of 1 runs failed; their rows carry the status and error.\n")
    assert np.isnan(row["tokens_per_s"] if row["tokens_per_s"] is not None else np.nan)


@pytest.mark.slow
def test_under_the_users_torchrun_a_failed_run_stops_the_job_and_keeps_the_rows(tmp_path):
    suite = write_suite(tmp_path, {**DDP, "strategies": ["bucket", "mask"], "train": {**DDP["train"], "epochs": 1},
                                   "data": {**DDP["data"], "train_size": 40}})
    env = break_rank_1(tmp_path)
    started = time.monotonic()
    done = torchrun("-m", "lstmbench", "run", str(suite), "--out", str(tmp_path / "r"), cwd=tmp_path, env=env)
    assert time.monotonic() - started < 120
    assert done.returncode != 0
    assert "Error: rank 1: " in done.stderr and "RuntimeError: injected failure" in done.stderr
    rows = rows_in(tmp_path / "r")
    assert rows[0]["status"] == "ok"  # the seed's first run (shuffled order), measured before the failure: kept
    # rank 0 may still have stored the failed run (its error: the peer that left the all-reduce)
    assert all(r["strategy"] != rows[0]["strategy"] and r["status"] == "error" for r in rows[1:])


@pytest.mark.slow
def test_verify_catches_a_wrongly_scaled_distributed_loss(tmp_path):
    """The ranks' loss scale is wrong (every step's count taken as 1, so DDP averages sums, not the union's
    mean): verify must say MISMATCH and exit 1. The break is a sitecustomize in the ranks alone."""
    env = in_ranks(tmp_path, "if 'RANK' in os.environ:\n"
                             "    from lstmbench.strategies.strategy import Strategy\n"
                             "    Strategy.scored = lambda self, data, idx: 1\n")
    suite = write_suite(tmp_path, {**DDP, "strategies": ["mask"]})
    done = lstmbench("verify", str(suite), "--batches", "1", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("| mask ") and "per_rank" in line)
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    assert cells[-1] == "MISMATCH" and float(cells[4]) > 1  # gradients: a sum over 8 x 2 sequences, not a mean
    assert done.stderr.endswith("Error: 1 distributed form does not match one process on the union of its 2 ranks' "
                                "batches: mask\n")


@pytest.mark.slow
def test_a_rank_killed_by_a_signal_is_a_crashed_row_naming_it(tmp_path):
    env = break_rank_1(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    suite = write_suite(tmp_path, {**DDP, "strategies": ["mask"]})
    done = lstmbench("run", str(suite), "--out", str(tmp_path / "r"), cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    (row,) = rows_in(tmp_path / "r")
    assert row["status"] == "crashed" and row["world_size"] == 2
    assert row["error"].startswith("rank 1 died: Signal 9 (SIGKILL) received by PID "), row["error"]
    assert row["error"].endswith("; the job exited with code 1")


def test_the_worker_started_by_hand_says_what_it_is_in_one_line():
    r = subprocess.run([sys.executable, "-m", "lstmbench.run.ddp_worker"], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == ("Error: python -m lstmbench.run.ddp_worker JOB: one rank of a job that `lstmbench run` or "
                        "`lstmbench verify --nproc` wrote and started under torchrun\n")
