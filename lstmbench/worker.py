"""The process model: each run happens in a fresh child process (spawn), so its memory and timing are its own.

The child sends progress messages and, at the end, one record (or a failure record); a child that dies
without a word becomes a `crashed` record. The parent never holds model tensors.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import queue
import traceback
from typing import Any, Callable

from .errors import RunFailed
from .records import RunRecord
from .strategies import note_for
from .suite import StrategySpec, Suite

Progress = Callable[[int, int], None]


def run_isolated(suite: Suite, spec: StrategySpec, seed: int, device: str,
                 progress: Progress | None = None) -> RunRecord:
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()  # carries only the final record: a queue's feeder thread must not run mid-step
    steps = ctx.Array("l", 2, lock=False)  # (done, total), written by the child, polled here
    child = ctx.Process(target=_child, args=(suite, spec, seed, device, messages, steps, os.getpid()),
                        daemon=True)
    child.start()
    try:
        while True:
            try:
                return RunRecord(**messages.get(timeout=0.25))
            except queue.Empty:
                if progress and steps[1]:
                    progress(steps[0], steps[1])
                if not child.is_alive() and messages.empty():
                    return failure_record(suite, spec, seed, device, "crashed",
                                          f"the run's process died with exit code {child.exitcode} "
                                          "before reporting")
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()


def run_inline(suite: Suite, spec: StrategySpec, seed: int, device: str,
               progress: Progress | None = None) -> RunRecord:
    """Same as run_isolated but in this process (tests, debugging): faster to start, memory not isolated."""
    return _guarded(suite, spec, seed, device, progress)


def _child(suite: Suite, spec: StrategySpec, seed: int, device: str, messages: Any, steps: Any,
           parent: int) -> None:
    _die_with_parent(parent)

    def progress(done: int, total: int) -> None:  # two stores into shared memory: no syscall, no thread
        steps[0], steps[1] = done, total

    record = _guarded(suite, spec, seed, device, progress)
    messages.put(record.to_dict())


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this run if `lstmbench run` is killed (kill -9 leaves no time to clean up)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _guarded(suite: Suite, spec: StrategySpec, seed: int, device: str, progress: Progress | None) -> RunRecord:
    import torch

    from .probes import resolve_device
    from .train import run_one

    try:
        return run_one(suite, spec, seed, resolve_device(device), progress)
    except RunFailed as e:
        return failure_record(suite, spec, seed, device, e.kind, str(e))
    except torch.OutOfMemoryError as e:
        return failure_record(suite, spec, seed, device, "oom", _one_line(e))
    except MemoryError as e:
        return failure_record(suite, spec, seed, device, "oom", _one_line(e) or "MemoryError")
    except Exception as e:  # noqa: BLE001 - any failure becomes a row; the suite goes on
        where = traceback.extract_tb(e.__traceback__)[-1]
        return failure_record(suite, spec, seed, device, "error",
                              f"{type(e).__name__}: {_one_line(e)} (at {where.filename}:{where.lineno})")


def failure_record(suite: Suite, spec: StrategySpec, seed: int, device: str, status: str, error: str) -> RunRecord:
    from .records import collect_env, identity

    return RunRecord(**identity(suite, spec, seed, device, note_for(spec, suite)), status=status, error=error,
                     env=collect_env(device, 0))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300]
