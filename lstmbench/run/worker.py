"""The process model: each run happens in a fresh child process, so its memory and timing are its own.

The child is forked from a forkserver that has already imported torch and lstmbench (so a run starts in
milliseconds, not the seconds of a fresh interpreter's imports); the server has run no torch operation, so
no thread pool or device state is inherited. `spawn` (a fresh interpreter per run) remains, where there is
no forkserver or on request. The child sends progress and, at the end, one record (or a failure record); a
child that dies without a word becomes a `crashed` record. The parent never holds model tensors.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import RunFailed
from ..measure import RunRecord
from ..strategies import note_for
from ..suite import StrategySpec, Suite

Progress = Callable[[int, int], None]


START_METHODS = ("forkserver", "spawn")
# what the server imports (and runs no torch operation): torch and every module a run uses, and torch._dynamo,
# which torch imports on the first use of a dispatch mode (the run's kernel probe): 1.7-2 s a run otherwise
PRELOAD = ["lstmbench.measure.train", "torch._dynamo"]


def default_start() -> str:
    """forkserver where the platform has it (Linux, macOS), else spawn."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _context(start: str) -> Any:
    ctx = mp.get_context(start)
    if start == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)  # read when the server starts (the first run); later calls do nothing
    return ctx


def run_isolated(suite: Suite, spec: StrategySpec, seed: int, device: str,
                 progress: Progress | None = None, data_dir: str | None = None,
                 start: str | None = None) -> RunRecord:
    """The run in a child process of its own. `data_dir`: the seed's data, made once (datacache); `start`:
    forkserver (default where available) or spawn."""
    start = start or default_start()
    ctx = _context(start)
    messages = ctx.Queue()  # carries only the final record: a queue's feeder thread must not run mid-step
    steps = ctx.Array("l", 2, lock=False)  # (done, total), written by the child, polled here
    # not daemonic: a daemonic process may not start children, and a run starts its DataLoader's workers; the
    # run is still ended with lstmbench: killed below on any exit of this function, and by the kernel if we die
    child = ctx.Process(target=_child, args=(suite, spec, seed, device, messages, steps, os.getpid(), data_dir,
                                             start), daemon=False)
    _start_deaf_to_ctrl_c(child, start)
    try:
        while True:
            try:
                return _started(RunRecord(**messages.get(timeout=0.25)), start)
            except queue.Empty:
                if progress and steps[1]:
                    progress(steps[0], steps[1])
                if not child.is_alive() and messages.empty():
                    return _started(failure_record(suite, spec, seed, device, "crashed",
                                                   f"the run's process died with exit code {child.exitcode} "
                                                   "before reporting"), start)
    except BaseException:  # Ctrl-C (or any error here): the run is abandoned, and its process with it
        child.kill()
        raise
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()


def _started(record: RunRecord, start: str) -> RunRecord:
    record.start_method = start
    return record


def _start_deaf_to_ctrl_c(child: Any, start: str = "spawn") -> None:
    """Start the child so that it ignores Ctrl-C from birth: Ctrl-C reaches the whole foreground process group,
    and a child still importing torch would print a KeyboardInterrupt traceback. The parent handles Ctrl-C: it
    kills the child and keeps the finished rows.

    An ignored signal stays ignored across exec, and Python installs its own handler only where SIGINT is at its
    default. forkserver: the server is launched (once, a fork and an exec) with SIGINT ignored, and every run it
    forks inherits that; the parent meanwhile only notes a Ctrl-C, and acts on it once the child is started (it
    was lost before, and the suite went on). spawn: each child is exec'd from the parent, so the parent ignores
    SIGINT while it starts one; a Ctrl-C in that moment is lost (spawn is the fallback, `run --spawn`)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        child.start()
        return
    if start == "forkserver":
        with _ignoring_ctrl_c():
            from multiprocessing import forkserver
            forkserver.ensure_running()  # once; later calls see it running
        noted: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda *_: noted.append(1))
        try:
            child.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        if noted:
            child.kill()
            child.join()
            raise KeyboardInterrupt
        return
    with _ignoring_ctrl_c():
        child.start()


class _ignoring_ctrl_c:  # noqa: N801 - a context manager read as a phrase
    def __enter__(self) -> None:
        self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *_: Any) -> None:
        signal.signal(signal.SIGINT, self.previous)


def run_torchrun(suite: Suite, spec: StrategySpec, seed: int, device: str,
                 progress: Progress | None = None) -> RunRecord:
    """A DDP run of `suite.launch.nproc` processes on this node, started by torchrun; rank 0 hands back
    the record through a file. A job that ends without one becomes a `crashed` record."""
    with progress_memory(progress) as (name, poll):  # written by rank 0
        job = {"kind": "run", "suite": suite, "spec": spec, "seed": seed, "device": device, "progress": name}
        ended = torchrun_job(job, suite.launch.nproc, suite.threads, poll)
    if ended.killed and (ended.result is None or " by peer" in ended.result.get("error", "")):
        # a rank died without a word; the others saw only their peer vanish
        return failure_record(suite, spec, seed, device, "crashed", f"{ended.killed}; the job exited with code "
                                                                   f"{ended.code}")
    if ended.result is not None:
        return RunRecord(**ended.result)
    return failure_record(suite, spec, seed, device, "crashed",
                          f"the torchrun job exited with code {ended.code} before reporting: {ended.last_error}")


@dataclass
class JobEnd:
    code: int  # torchrun's exit code
    result: Any  # what rank 0 wrote, else the first failing rank's, else None
    last_error: str  # the last line of the job's output that mentions an error
    killed: str = ""  # torchrun's root cause when a rank died of a signal: 'rank 1 died: Signal 9 (SIGKILL) ...'


def torchrun_job(job: dict[str, Any], nproc: int, threads: int, poll: Callable[[], Any] = lambda: None) -> JobEnd:
    """Run `python -m lstmbench.run.ddp_worker JOB` on `nproc` ranks under torchrun and collect what they wrote."""
    with tempfile.TemporaryDirectory(prefix="lstmbench-ddp-") as tmp:
        out = Path(tmp) / "result.pkl"
        file = Path(tmp) / "job.pkl"
        file.write_bytes(pickle.dumps({**job, "out": str(out)}))
        log = Path(tmp) / "torchrun.log"
        code = _torchrun(nproc, threads, file, log, poll)
        results = {f: pickle.loads(f.read_bytes()) for f in Path(tmp).glob("result.pkl*")}
        if out in results and not failed_result(results[out]):
            return JobEnd(code, results[out], _last_error(log))
        # the first rank to fail says why; the others failed after it (a peer gone from the all-reduce)
        first = min(results, key=lambda f: f.stat().st_mtime_ns, default=None)
        return JobEnd(code, results[first] if first else None, _last_error(log), _killed(log))


def _killed(log: Path) -> str:
    """From torchrun's failure summary: which rank a signal killed first ('' if none was)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    if not any(line.startswith("Root Cause") for line in lines):
        return ""
    cause = lines[next(i for i, line in enumerate(lines) if line.startswith("Root Cause")):]
    rank = next((line.split(":", 1)[1].split("(")[0].strip() for line in cause if line.startswith("rank ")), "?")
    signal_line = next((line.split(":", 1)[1].strip() for line in cause
                        if line.startswith("traceback") and "Signal" in line), "")
    return f"rank {rank} died: {signal_line}" if signal_line else ""


def failed_result(result: Any) -> bool:
    """A rank's result that is a failure record (a row whose status is not ok)."""
    return isinstance(result, dict) and result.get("status") != "ok"


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """torch's own launcher, on this node alone (a free port for the rendezvous), with no restarts."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--max-restarts=0", *args]


def _torchrun(nproc: int, threads: int, job: Path, log: Path, poll: Callable[[], Any]) -> int:
    """Run the job's ranks under torchrun; return its exit code. Each rank gets `threads` intra-op threads,
    or an equal share of the cores (torchrun alone would give each 1)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or max(1, (os.cpu_count() or 1) // nproc)),
               PYTHONUNBUFFERED="1")
    return _supervised(torchrun_command(nproc, ["-m", "lstmbench.run.ddp_worker", str(job)]), env, log, poll)


def _supervised(command: list[str], env: dict[str, str], log: Path, poll: Callable[[], Any],
                deaf: bool = False) -> int:
    """Run `command` to its end, its output into `log`, polling every quarter second; its exit code. It dies with
    this process (Linux), and is ended if this function is left early (Ctrl-C). `deaf`: it ignores Ctrl-C from
    birth (an ignored signal stays ignored across exec): the parent handles it, and no traceback is printed."""
    prctl = _prctl()

    def before_exec() -> None:
        if prctl:
            prctl(1, signal.SIGKILL)
        if deaf:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    with open(log, "wb") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=before_exec)
    try:
        while True:
            try:
                return proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                poll()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _prctl() -> Any:
    """libc's prctl, looked up before any fork (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _last_error(log: Path) -> str:
    """What a torchrun job that left no result died of: a rank killed by a signal (torchrun's summary says
    which), else the last exception line of the ranks' output (not torchrun's own ChildFailedError)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    signals = [line.removeprefix("traceback : ") for line in lines if "received by PID" in line]
    errors = [line for line in lines if re.search(r"\w(Error|Exception)\b", line) and "ChildFailedError" not in line]
    return _one_line(Exception((signals[-1:] or errors[-1:] or lines[-1:] or ["no output"])[0]))


def run_keras_process(suite: Suite, spec: StrategySpec, seed: int, device: str, progress: Progress | None = None,
                      data_dir: str | None = None) -> RunRecord:
    """A Keras strategy's run, in a fresh interpreter of its own whatever the start method (`python -m
    lstmbench.run.keras_worker JOB`): Keras reads KERAS_BACKEND once, at import, and TensorFlow does not survive
    a fork. It sees no GPU (Keras strategies run on the CPU), and hands its record back through a file; one that
    ends without it becomes a `crashed` record naming its last error."""
    env = dict(os.environ, KERAS_BACKEND=spec.backend, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
               TF_CPP_MIN_LOG_LEVEL="2")  # TensorFlow's start-up notices are not the run's errors
    with progress_memory(progress) as (name, poll), tempfile.TemporaryDirectory(prefix="lstmbench-keras-") as tmp:
        out, job, log = Path(tmp) / "result.pkl", Path(tmp) / "job.pkl", Path(tmp) / "keras.log"
        job.write_bytes(pickle.dumps({"suite": suite, "spec": spec, "seed": seed, "device": device,
                                      "data_dir": data_dir, "progress": name, "out": str(out)}))
        code = _supervised([sys.executable, "-m", "lstmbench.run.keras_worker", str(job)], env, log, poll, deaf=True)
        if out.exists():
            return _started(RunRecord(**pickle.loads(out.read_bytes())), "spawn")
        why = f"the Keras run's process exited with code {code} before reporting: {_last_error(log)}"
    return _started(failure_record(suite, spec, seed, device, "crashed", why), "spawn")


@contextlib.contextmanager
def progress_memory(progress: Progress | None) -> Iterator[tuple[str, Callable[[], None]]]:
    """Shared memory for a child process's (done, total) steps (a torchrun job's rank 0, a Keras run): its name,
    for the child's progress_writer, and a poll that hands the latest to `progress`. Unlinked on leaving."""
    from multiprocessing import shared_memory

    import numpy as np

    shm = shared_memory.SharedMemory(create=True, size=16)
    view = {"steps": np.ndarray((2,), dtype=np.int64, buffer=shm.buf)}
    view["steps"][:] = 0

    def poll() -> None:
        done, total = (int(x) for x in view["steps"])
        if progress and total:
            progress(done, total)

    try:
        yield shm.name, poll
    finally:
        view.clear()  # no view may outlive the mapping
        shm.close()
        shm.unlink()


def progress_writer(name: str) -> Progress:
    """In the child: (done, total) steps into the parent's progress_memory `name`, two stores, no syscall."""
    from multiprocessing import resource_tracker, shared_memory

    import numpy as np

    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]  # the parent owns it
    steps = np.ndarray((2,), dtype=np.int64, buffer=shm.buf)

    def progress(done: int, total: int) -> None:
        steps[0], steps[1] = done, total

    progress.shm = shm  # type: ignore[attr-defined]  # keeps the mapping alive
    return progress


def run_inline(suite: Suite, spec: StrategySpec, seed: int, device: str,
               progress: Progress | None = None, data: Any = None) -> RunRecord:
    """Same as run_isolated but in this process (tests, debugging): faster to start, memory not isolated.
    `data`: the seed's splits, made once."""
    record = guarded(suite, spec, seed, device, progress, data=data)
    record.start_method = "inline"
    return record


def _child(suite: Suite, spec: StrategySpec, seed: int, device: str, messages: Any, steps: Any,
           parent: int, data_dir: str | None, start: str) -> None:
    die_with_parent(parent, forked_by_server=start == "forkserver")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it kills this process

    def progress(done: int, total: int) -> None:  # two stores into shared memory: no syscall, no thread
        steps[0], steps[1] = done, total

    data = None
    if data_dir:
        from ..data import load

        data = load(data_dir)
    record = guarded(suite, spec, seed, device, progress, data=data)
    messages.put(record.to_dict())


def die_with_parent(parent: int, forked_by_server: bool = False) -> None:
    """Linux: have the kernel kill this run if `lstmbench run` is killed (kill -9 leaves no time to clean up).
    A run forked by the forkserver dies with the server, and the server ends when `lstmbench run` does."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if forked_by_server:  # its parent is the server: check that `lstmbench run` itself is still there
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
    elif os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def guarded(suite: Suite, spec: StrategySpec, seed: int, device: str, progress: Progress | None,
            group: Any = None, data: Any = None) -> RunRecord | None:
    """run_one, with any failure turned into a failure record. None on DDP ranks other than 0."""
    from ..measure import out_of_memory, resolve_device, run_keras, run_one

    try:
        if spec.framework == "keras":  # in its own interpreter (run_keras_process), on the CPU
            return run_keras(suite, spec, seed, progress, data)
        return run_one(suite, spec, seed, resolve_device(device), progress, group, data)
    except RunFailed as e:
        return failure_record(suite, spec, seed, device, e.kind, str(e))
    except Exception as e:  # noqa: BLE001 - any failure becomes a row; the suite goes on
        if out_of_memory(e):  # on a GPU, or torch's CPU allocator
            return failure_record(suite, spec, seed, device, "oom", _one_line(e) or type(e).__name__)
        where = traceback.extract_tb(e.__traceback__)[-1]
        return failure_record(suite, spec, seed, device, "error",
                              f"{type(e).__name__}: {_one_line(e)} (at {where.filename}:{where.lineno})")


def failure_record(suite: Suite, spec: StrategySpec, seed: int, device: str, status: str, error: str) -> RunRecord:
    """The row of a run that measured nothing. Its device is named as its ok rows name it (the GPU's name, not
    'cuda'), so that report, compare and recommend count it in the same section."""
    from ..measure import collect_env, device_name, identity

    name = device_name(device)
    kind = "cpu" if name == "cpu" else device.split(":", 1)[0] if device != "auto" else "cuda"
    return RunRecord(**identity(suite, spec, seed, kind, note_for(spec, suite)), status=status, error=error,
                     env=collect_env(name, 0))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300]
