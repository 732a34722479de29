"""Keras's worker: one Keras strategy's run in a fresh interpreter, `python -m lstmbench.run.keras_worker JOB`
(worker.run_keras_process starts it with KERAS_BACKEND set). Keras reads its backend once, at import, and
TensorFlow does not survive a fork: neither `lstmbench run` nor its forkserver ever imports Keras.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

from .worker import die_with_parent, guarded, progress_writer


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
    record = guarded(job["suite"], job["spec"], job["seed"], job["device"], progress_writer(job["progress"]),
                     data=data)
    out = Path(job["out"])
    tmp = out.parent / f".{out.name}.tmp"
    tmp.write_bytes(pickle.dumps(record.to_dict()))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
