"""The DataLoader inside real runs: `lstmbench run --set train.loader.workers=2`, through the CLI and the real
process model (forkserver, or --spawn), trains every run with its workers, and no process a run started outlives
it: not after a run that ends, one whose worker fails, one killed outright, nor one interrupted with Ctrl-C.

Each `lstmbench run` here starts in a session of its own: every process it starts (the forkserver, the resource
tracker, each run's process and that run's DataLoader workers) stays in that session, orphaned or not, so a
session with no live process left proves that nothing survived.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]
LINUX_PROC = os.path.exists("/proc/self/stat")
pytestmark = pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc (sessions are read from it)")

# lstmbench's CLI with its DataLoader workers instrumented: each worker writes its pid (and its parent's, the
# run's process) into $WORKER_PIDS on its first batch. $WORKER_FAULT makes a worker's second batch, once both
# workers have collated one, fail: raise (an error in the collate_fn), kill (the run's process killed outright,
# as by the OOM killer; the worker then blocks, so that only its run's death can end it) or hang (the worker
# blocks: the run cannot finish). A run's process imports this file as __mp_main__ (under the forkserver and
# spawn alike), and its workers are forked from it.
INSTRUMENTED = '''
import os, signal, threading, time
from pathlib import Path

import lstmbench.strategies.loader as loader

original = loader.WorkerCollate.__call__


def collate(self, indices):
    mine = Path(os.environ["WORKER_PIDS"]) / str(os.getpid())
    if not mine.exists():
        mine.write_text(str(os.getppid()))
        return original(self, indices)
    fault = os.environ.get("WORKER_FAULT", "")
    while fault and len(list(mine.parent.iterdir())) < 2:  # the other worker was handed its first batch at start
        time.sleep(0.01)
    if fault == "raise":
        raise RuntimeError("collate failed in a worker")
    if fault == "kill":
        os.kill(os.getppid(), signal.SIGKILL)
    if fault in ("kill", "hang"):
        threading.Event().wait()
    return original(self, indices)


loader.WorkerCollate.__call__ = collate

if __name__ == "__main__":
    from lstmbench.cli import main
    main()
'''


def loader_suite(tiny_dict: dict, strategies: list) -> dict:
    tiny_dict.update(seeds=[0], strategies=strategies, ideal=False)
    tiny_dict["threads"] = 1  # the run's one thread and two workers: no oversubscribed cores on a shared machine
    return tiny_dict


@dataclass
class Cli:
    """One `lstmbench` in a session of its own, its output in files: a process that outlives it and holds a
    pipe cannot keep the test waiting."""
    proc: subprocess.Popen
    logs: Path

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        """Its exit code and standard error, once it has exited."""
        return self.proc.wait(timeout=timeout), (self.logs / "stderr").read_text()


@pytest.fixture
def lstmbench(tmp_path):
    """Start `lstmbench ARGS` (or the instrumented script's); afterwards, kill what a failing test left alive."""
    started: list[Cli] = []

    def start(*args, script: Path | None = None, env: dict | None = None) -> Cli:
        logs = tmp_path / f"logs{len(started)}"
        logs.mkdir()
        entry = [str(script)] if script else ["-m", "lstmbench"]
        with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
            proc = subprocess.Popen([sys.executable, *entry, *map(str, args)], cwd=ROOT, stdout=stdout,
                                    stderr=stderr, start_new_session=True, env={**os.environ, **(env or {})})
        started.append(Cli(proc, logs))
        return started[-1]

    yield start
    for cli in started:
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait()
        for pid in alive_in(cli.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()
            if line.strip()]


def stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[3])


def alive_in(session: int) -> dict[int, str]:
    """pid -> command line of every process of `session` that is still alive (a zombie has ended)."""
    alive = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = stat(int(entry.name))
            if info and info[0] != "Z" and info[1] == session:
                try:
                    alive[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
                except OSError:
                    continue
    return alive


def left_alive(session: int, timeout: float = 30.0) -> dict[int, str]:
    """The processes of `session` still alive once it has emptied, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (alive := alive_in(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def worker_pids(folder: Path) -> dict[int, int]:
    """worker pid -> the pid of its parent (the run's process), as the instrumented workers wrote them."""
    return {int(f.name): int(f.read_text()) for f in folder.iterdir()}


def instrumented(tmp_path: Path) -> tuple[Path, Path]:
    """The instrumented script, and the folder its workers write their pids into."""
    script = tmp_path / "instrumented.py"
    script.write_text(INSTRUMENTED)
    pids = tmp_path / "workers"
    pids.mkdir()
    return script, pids


@pytest.mark.parametrize("start", ["forkserver", "spawn"])
@pytest.mark.parametrize("pin", [False, True], ids=["unpinned", "pinned"])
@pytest.mark.slow
def test_loader_workers_feed_every_run_and_leave_no_process(tmp_path, tiny_dict, lstmbench, start, pin):
    suite = write_suite(tmp_path, loader_suite(tiny_dict, ["mask"]))
    out = tmp_path / "results"
    cli = lstmbench("run", suite, "--out", out, "--set", "train.loader.workers=2",
                    "--set", f"train.loader.pin_memory={str(pin).lower()}", *(["--spawn"] if start == "spawn" else []))
    code, stderr = cli.finish()
    rows = rows_of(out / "tiny")
    assert [(r["strategy"], r["status"], r["error"]) for r in rows] == [("mask", "ok", "")], stderr
    assert code == 0, stderr
    (row,) = rows
    assert (row["start_method"], row["loader_workers"], row["loader_pin_memory"]) == (start, 2, pin)
    assert row["data_wait_s"] >= 0.0 and row["steps"] == 12  # 96 sequences in batches of 16, 2 epochs
    assert left_alive(cli.proc.pid) == {}


@pytest.mark.parametrize("fault, status, error", [
    ("raise", "error", "RuntimeError: Caught RuntimeError in DataLoader worker process "),
    ("kill", "crashed", "the run's process died with exit code -9 before reporting"),
], ids=["worker-raises", "run-killed"])
@pytest.mark.slow
def test_a_run_whose_worker_fails_leaves_no_worker(tmp_path, tiny_dict, lstmbench, fault, status, error):
    suite = write_suite(tmp_path, loader_suite(tiny_dict, ["mask"]))
    script, pids = instrumented(tmp_path)
    out = tmp_path / "results"
    cli = lstmbench("run", suite, "--out", out, "--set", "train.loader.workers=2", script=script,
                    env={"WORKER_PIDS": str(pids), "WORKER_FAULT": fault})
    code, stderr = cli.finish()
    (row,) = rows_of(out / "tiny")
    assert row["status"] == status and row["error"].startswith(error), (row["error"], stderr)
    assert code == 1
    workers = worker_pids(pids)
    assert len(workers) == 2 and len(set(workers.values())) == 1  # both workers of the one run's process
    assert cli.proc.pid not in workers.values()  # forked by the run's process, not by lstmbench
    assert left_alive(cli.proc.pid) == {}, f"the run's workers were {sorted(workers)}"


@pytest.mark.slow
def test_ctrl_c_mid_run_leaves_no_worker(tmp_path, tiny_dict, lstmbench):
    """Ctrl-C reaches the whole foreground process group while a worker is busy collating (here: for ever)."""
    suite = write_suite(tmp_path, loader_suite(tiny_dict, ["mask"]))
    script, pids = instrumented(tmp_path)
    out = tmp_path / "results"
    cli = lstmbench("run", suite, "--out", out, "--set", "train.loader.workers=2", script=script,
                    env={"WORKER_PIDS": str(pids), "WORKER_FAULT": "hang"})
    # the run cannot finish (a worker blocks on its second batch): wait until both workers have collated one
    deadline = time.monotonic() + 120
    while len(list(pids.iterdir())) < 2 and cli.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(pids.iterdir())) == 2, (cli.logs / "stderr").read_text()
    os.killpg(cli.proc.pid, signal.SIGINT)
    code, stderr = cli.finish(timeout=60)
    assert code == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1].startswith("Interrupted: 0 finished run(s) kept in ")
    assert rows_of(out / "tiny") == []
    assert left_alive(cli.proc.pid) == {}, f"the run's workers were {sorted(worker_pids(pids))}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pinned memory takes effect on a GPU only)")
def test_pinned_workers_feed_a_cuda_run(tmp_path, tiny_dict, lstmbench):
    suite = write_suite(tmp_path, loader_suite(tiny_dict, ["mask", "pack"]))
    out = tmp_path / "results"
    cli = lstmbench("run", suite, "--out", out, "--device", "cuda", "--set", "train.loader.workers=2",
                    "--set", "train.loader.pin_memory=true")
    code, stderr = cli.finish()
    rows = rows_of(out / "tiny")
    assert sorted((r["strategy"], r["status"], r["error"]) for r in rows) == [("mask", "ok", ""), ("pack", "ok", "")], \
        stderr
    assert code == 0, stderr
    for row in rows:
        assert (row["device"], row["loader_workers"], row["loader_pin_memory"]) == ("cuda", 2, True)
        assert row["data_wait_s"] >= 0.0
    assert left_alive(cli.proc.pid) == {}
