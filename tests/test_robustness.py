"""Robustness: nothing measured is lost, failed runs become rows, every bad input is one clean line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lstmbench.cli import main
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]


def rows_of(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.rglob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def lstmbench(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lstmbench", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_kill_9_mid_suite_then_resume_gives_every_run_once(tmp_path, tiny_dict):
    tiny_dict["strategies"] = ["naive", "mask", "pack"]
    tiny_dict["seeds"] = [0, 1, 2, 3]  # 16 runs: a quiet machine finishes 8 of them within a second
    suite = write_suite(tmp_path, tiny_dict)
    out = tmp_path / "results"
    proc = lstmbench("run", suite, "--out", out)
    deadline = time.time() + 120
    while time.time() < deadline and len(rows_of(out)) < 2:
        time.sleep(0.02)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    child_pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = rows_of(out)
    assert 2 <= len(killed) < 16  # 4 runs a seed (ideal + 3), 4 seeds
    for pid in child_pids:  # the run in progress died with its parent (PR_SET_PDEATHSIG)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"run process {pid} outlived its killed parent")

    resumed = lstmbench("run", suite, "--out", out, "--resume", "--inline")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"Resuming: {len(killed)} runs already have ok rows" in stderr
    final = rows_of(out)
    pairs = [(r["strategy"], r["seed"]) for r in final]
    expected = [(s, seed) for seed in (0, 1, 2, 3) for s in ("ideal", "naive", "mask", "pack")]
    assert sorted(pairs) == sorted(expected)  # every run once: nothing lost, nothing twice
    assert all(r["status"] == "ok" for r in final)
    assert all((r["efficiency"] is None) == (r["strategy"] == "ideal") for r in final)  # each run its own reference

    again = lstmbench("run", suite, "--out", out, "--resume", "--inline")
    stdout, stderr = again.communicate(timeout=60)
    assert again.returncode == 0 and stdout.strip() == "Nothing to run."
    assert len(rows_of(out)) == 16


@pytest.mark.parametrize("second", [[], ["--resume"]])
@pytest.mark.slow
def test_a_second_writer_into_one_folder_is_refused_and_every_row_kept_once(tmp_path, tiny_dict, second):
    """Two `run` (or a `run` and a `--resume`) into one folder at once: the second is refused in one line while
    the first holds the folder, so no run is measured twice; the first keeps every row."""
    tiny_dict["seeds"] = list(range(10))
    tiny_dict["strategies"] = ["mask", "pack"]
    suite = write_suite(tmp_path, tiny_dict)
    out = tmp_path / "results"
    first = lstmbench("run", suite, "--out", out, "--inline")
    deadline = time.time() + 120
    while time.time() < deadline and not rows_of(out):  # the first holds the folder once it has a row
        time.sleep(0.02)
    other = lstmbench("run", suite, "--out", out, "--inline", *second)
    _, stderr = other.communicate(timeout=120)
    assert first.poll() is None, "the first run ended before the second started: make the suite longer"
    assert other.returncode == 2
    assert stderr.startswith(f"Error: {out / 'tiny'} is being written by another lstmbench run (pid {first.pid} on ")
    assert stderr.endswith("UTC); wait for it to end, or give another --out; nothing was run\n")
    first.communicate(timeout=300)
    assert first.returncode == 0
    pairs = sorted((r["strategy"], r["seed"]) for r in rows_of(out))
    assert pairs == sorted((s, seed) for seed in range(10) for s in ("ideal", "mask", "pack"))  # each once
    # the claim ended with its run (what this resume runs, if anything: runs the second process disturbed)
    again = lstmbench("run", suite, "--out", out, "--inline", "--resume")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0 and "is being written" not in stderr


@pytest.fixture
def failing(monkeypatch):
    """Make named strategies fail inside their run, in this process (runs with --inline)."""
    import lstmbench.measure.train

    original = lstmbench.measure.train.run_one
    plan = {}

    def run_one(suite, spec, *args, **kwargs):
        if spec.name in plan:
            raise plan[spec.name]
        return original(suite, spec, *args, **kwargs)

    monkeypatch.setattr(lstmbench.measure.train, "run_one", run_one)
    return plan


@pytest.mark.parametrize("error, status, message", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom",
     "CUDA out of memory. Tried to allocate 2.00 GiB"),
    (RuntimeError("boom\nsecond line"), "error", "RuntimeError: boom second line (at "),
    (ValueError("loss became nan"), "error", "ValueError: loss became nan (at "),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                  "allocate 17179869184 bytes."), "oom", "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPU"),
])
def test_a_failing_run_is_a_row_and_the_suite_goes_on(tmp_path, tiny_file, failing, error, status, message):
    failing["pack"] = error
    out = tmp_path / "results"
    r = CliRunner().invoke(main, ["run", str(tiny_file), "--inline", "--out", str(out), "--set", "seeds=[0]"])
    assert r.exit_code == 1
    assert r.stderr.endswith("Error: 1 of 6 runs failed; their rows carry the status and error.\n")
    rows = {row["strategy"]: row for row in rows_of(out)}
    assert [rows[s]["status"] for s in ("ideal", "naive", "truncate", "mask", "bucket")] == ["ok"] * 5
    assert rows["pack"]["status"] == status
    assert rows["pack"]["error"].startswith(message) and "\n" not in rows["pack"]["error"]
    assert rows["pack"]["tokens_per_s"] is None and rows["pack"]["init_checksum"] == ""


@pytest.mark.slow
def test_a_killed_run_process_is_a_crashed_row(tmp_path, tiny_dict):
    """The run's child process is killed outright (as by the kernel's OOM killer): a `crashed` row."""
    tiny_dict["seeds"] = [0]
    tiny_dict["strategies"] = ["mask", "pack"]
    suite = write_suite(tmp_path, tiny_dict)
    script = tmp_path / "killer.py"
    # spawn re-imports the main script in each child, so the patch below reaches the run processes
    script.write_text(
        "import os, signal\n"
        "import lstmbench.measure.train as t\n"
        "original = t.run_one\n"
        "def run_one(suite, spec, *a, **k):\n"
        "    if spec.name == 'mask':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return original(suite, spec, *a, **k)\n"
        "t.run_one = run_one\n"
        "if __name__ == '__main__':\n"
        "    from lstmbench.cli import main\n"
        "    main()\n")
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(script), "run", str(suite), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    rows = {row["strategy"]: row for row in rows_of(out)}
    assert rows["mask"]["status"] == "crashed"
    assert rows["mask"]["error"] == "the run's process died with exit code -9 before reporting"
    assert rows["ideal"]["status"] == rows["pack"]["status"] == "ok"


def test_report_warns_about_a_torn_line_and_keeps_the_rest(tmp_path):
    from lstmbench.measure.record import SCHEMA_VERSION
    from lstmbench.suite.load import suite_from_dict
    from tests.conftest import TINY

    folder = tmp_path / "tiny"
    folder.mkdir()
    good = {"schema_version": SCHEMA_VERSION, "suite": "tiny", "suite_hash": "h", "strategy": "mask", "seed": 0,
            "device": "cpu", "status": "ok", "error": "", "computation_note": "", "tokens_per_s": 10.0,
            "samples_per_s": 1.0, "pad_fraction": 0.5, "data_time_fraction": 0.01, "train_time_s": 1.0,
            "peak_mem_bytes": 1, "baseline_rss_bytes": 0, "eval_accuracy": 1.0, "eval_accuracy_exact": 1.0,
            "init_checksum": "c", "config": suite_from_dict(TINY).to_dict(), "env": {}}
    (folder / "a.jsonl").write_text(json.dumps(good) + "\n" + '{"schema_version": 1, "sui')
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert r.stderr == (f"Warning: {folder / 'a.jsonl'}:2: not a complete JSON line (a run interrupted while "
                        "writing?); skipped\n")
    assert "| mask " in r.stdout


def test_single_class_data_is_refused(tmp_path, tiny_dict):
    tiny_dict["data"]["eval_size"] = 1
    path = write_suite(tmp_path, tiny_dict)
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 2
    assert r.stderr == (f"Error: {path}: data: the eval split of seed 0 has a single class (label 1): accuracy "
                        "would mean nothing; use more sequences\n")


def test_a_results_folder_that_is_a_file_fails_before_any_run(tmp_path, tiny_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    started = []
    monkeypatch.setattr("lstmbench.measure.train.run_one", lambda *a, **k: started.append(a))
    r = CliRunner().invoke(main, ["run", str(tiny_file), "--inline", "--out", "afile"])
    assert (r.exit_code, r.stderr) == (2, "Error: cannot write results to afile/tiny: afile is a file, not a folder; "
                                          "nothing was run\n")
    assert started == []


@pytest.fixture
def full_after(monkeypatch, tmp_path):
    """The results folder fills up after N rows: appends to a run file then fail with ENOSPC, as on a full disk
    (as root, a read-only folder would not stop a write). Rescue files go to tmp_path/rescue."""
    import builtins
    import errno
    import tempfile

    from lstmbench.results import storage

    rescue = tmp_path / "rescue"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    state = {"rows": 1, "rescue_fails": False}

    def failing_open(file, mode="r", *args, **kwargs):
        path = Path(file)
        if "a" in mode and path.parent.name == "tiny":
            if state["rows"] <= 0:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            state["rows"] -= 1
        if "a" in mode and path.parent == rescue and state["rescue_fails"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(storage, "open", failing_open, raising=False)
    return state


def test_a_row_that_cannot_be_stored_is_rescued_and_the_suite_stops(tmp_path, tiny_dict, full_after):
    tiny_dict["seeds"] = [0]
    tiny_dict["strategies"] = ["mask", "pack"]
    suite = write_suite(tmp_path, tiny_dict)
    out = tmp_path / "results"
    r = CliRunner().invoke(main, ["run", str(suite), "--inline", "--out", str(out)])
    assert r.exit_code == 1, r.output
    stored = rows_of(out)
    (run_file,) = (out / "tiny").glob("*.jsonl")
    rescue = tmp_path / "rescue" / f"lstmbench-rescued-{run_file.stem}.jsonl"
    rescued = [json.loads(line) for line in rescue.read_text().splitlines()]
    assert len(stored) == 1 and len(rescued) == 1  # both finished runs kept; the third was never started
    assert json.loads(r.stdout.splitlines()[0]) == rescued[0]  # and printed
    assert {row["strategy"] for row in stored + rescued} < {"ideal", "mask", "pack"}
    assert r.stderr.splitlines()[-1] == (
        f"Error: cannot append to {run_file} (No space left on device: {run_file}); the row was written to {rescue} "
        f"instead. Stopped: 1 row(s) kept in {run_file}, 1 run(s) not started; once the folder can be written, move "
        "the rescued row into it and run again with --resume.")


def test_a_row_that_cannot_be_rescued_either_is_printed(tmp_path, tiny_dict, full_after):
    tiny_dict["seeds"] = [0]
    tiny_dict["strategies"] = ["mask"]
    tiny_dict["ideal"] = False
    full_after.update(rows=0, rescue_fails=True)
    suite = write_suite(tmp_path, tiny_dict)
    r = CliRunner().invoke(main, ["run", str(suite), "--inline", "--out", str(tmp_path / "results")])
    assert r.exit_code == 1
    row = json.loads(r.stdout.splitlines()[0])
    assert row["strategy"] == "mask" and row["status"] == "ok" and row["tokens_per_s"] > 0
    assert "the row could not be rescued to" in r.stderr and "it is printed on standard output" in r.stderr
    assert r.stderr.count("\nError: ") + r.stderr.startswith("Error: ") == 1


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_rows_and_prints_no_traceback(tmp_path, tiny_dict):
    """Ctrl-C reaches the whole foreground process group: lstmbench and the run's child process."""
    tiny_dict["strategies"] = ["naive", "mask", "pack"]
    # 40 runs: on a quiet machine 8 of these runs finished within the 1.5 s this test used to wait (CI, stop 32)
    tiny_dict["seeds"] = list(range(10))
    suite = write_suite(tmp_path, tiny_dict)
    out = tmp_path / "results"
    proc = lstmbench("run", suite, "--out", out, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(rows_of(out)) < 1:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next run's child
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    kept = rows_of(out)
    assert 1 <= len(kept) < 40, stderr  # interrupted mid-suite, as the test means to be
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.splitlines()[-1].startswith(f"Interrupted: {len(kept)} finished run(s) kept in ")
    assert all(row["status"] == "ok" for row in kept)


def test_a_ctrl_c_while_a_run_process_starts_is_not_lost(monkeypatch):
    """The parent used to ignore SIGINT while a run's process started (for the child to inherit): a Ctrl-C then
    was discarded, and the suite went on to exit 0. With the forkserver, the parent now notes it, kills the
    started child and raises KeyboardInterrupt."""
    import multiprocessing.forkserver

    from lstmbench.run.worker import _start_deaf_to_ctrl_c

    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", lambda: None)

    class Child:
        started = killed = False

        def start(self):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the start
            time.sleep(0.05)
            self.started = True

        def kill(self):
            self.killed = True

        def join(self):
            pass

    child = Child()
    with pytest.raises(KeyboardInterrupt):
        _start_deaf_to_ctrl_c(child, "forkserver")
    assert child.started and child.killed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
