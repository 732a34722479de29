"""Keras's worker: one Keras strategy's run in a fresh interpreter, `python -m lstmbench.run.keras_worker JOB`
(worker.run_keras_process starts it with KERAS_BACKEND set). Keras reads its backend once, at import, and
TensorFlow does not survive a fork: neither `lstmbench run` nor its forkserver ever imports Keras.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .worker import die_with_parent, guarded


def main(argv: list[str]) -> int:
    """`python -m lstmbench.run.keras_worker JOB`: JOB is a pickle the parent wrote (the suite, the strategy, the
    seed, the seed's data folder, the progress memory's name, where the record goes)."""
    if len(argv) != 1:
        print("lstmbench.run.keras_worker runs one Keras strategy for `lstmbench run`; it is not started by hand",
              file=sys.stderr)
        return 2
    die_with_parent(os.getppid())
    job = pickle.loads(Path(argv[0]).read_bytes())
    data = None
    if job["data_dir"]:
        from ..data import load

        data = load(job["data_dir"])
    with _progress(job["progress"]) as progress:
        record = guarded(job["suite"], job["spec"], job["seed"], job["device"], progress, data=data)
    out = Path(job["out"])
    tmp = out.parent / f".{out.name}.tmp"
    tmp.write_bytes(pickle.dumps(record.to_dict()))
    tmp.replace(out)
    return 0


class _progress:  # noqa: N801 - a context manager read as a phrase
    """(done, total) steps into the parent's shared memory: two stores, no syscall."""

    def __init__(self, name: str):
        from multiprocessing import resource_tracker, shared_memory

        self.shm = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]  # the parent's
        self.steps = np.ndarray((2,), dtype=np.int64, buffer=self.shm.buf)

    def __enter__(self) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            self.steps[0], self.steps[1] = done, total
        return progress

    def __exit__(self, *_: Any) -> None:
        del self.steps  # no view may outlive the mapping
        self.shm.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
