"""torchrun's worker: one rank of a DDP job, `python -m lstmbench.run.ddp_worker JOB` (worker.run_distributed starts
them). It joins the group (ddp.join_group), trains or verifies through the code above the process group, and
rank 0 writes what the parent collects. Above `train` and `ddp` in the flow: nothing below imports it.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

from ..measure import Group, join_group, leave_group
from .worker import die_with_parent, failed_result, guarded, progress_writer


def main(argv: list[str]) -> int:
    """`python -m lstmbench.run.ddp_worker JOB`: one rank of a run (or of `verify --nproc`). JOB is a pickle the parent
    wrote: what to run and where rank 0 puts the result."""
    die_with_parent(os.getppid())  # torchrun's agent: if it dies, so does this rank
    job = pickle.loads(Path(argv[0]).read_bytes())
    if job["kind"] == "verify":
        from .verify_ranks import verify_distributed

        group = join_group("gloo", "cpu")
        result: Any = verify_distributed(job["suite"], group, job["batches"])
    else:
        device = job["device"]
        group = join_group(job["suite"].launch.backend, "cuda" if device.startswith("cuda") else "cpu")
        result = guarded(job["suite"], job["spec"], job["seed"], device, _progress(job, group), group)
        if result is not None:
            result = result.to_dict()
    failed = failed_result(result)
    if result is not None:  # rank 0's result, or the failure of another rank
        out = Path(job["out"] if group.is_main else f"{job['out']}.rank{group.rank}")
        tmp = out.parent / f".{out.name}.tmp"
        tmp.write_bytes(pickle.dumps(result))
        tmp.replace(out)
    if failed:  # the other ranks may wait in a collective: a non-zero exit makes torchrun stop them
        return 1
    leave_group()
    return 0


def _progress(job: dict, group: Group) -> Any:
    """Rank 0 reports (done, total) steps into the parent's shared memory: two stores, no syscall."""
    return progress_writer(job["progress"]) if group.is_main and job.get("progress") else None


if __name__ == "__main__":
    if len(sys.argv) != 2:  # started by hand: one line, not a traceback
        print("Error: python -m lstmbench.run.ddp_worker JOB: one rank of a job that `lstmbench run` or "
              "`lstmbench verify --nproc` wrote and started under torchrun", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
