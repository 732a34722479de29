"""Running a suite: the session (sweeps, resume, shards, torchrun's ranks, the rows' policy), preflight, the plan
of runs and shards, a process per run (forkserver, spawn, torchrun)."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "runner": (
        "MIN_STABLE_SEEDS", "UntilStable", "check_memory", "parse_shard", "plan_runs", "preflight", "run_suite",
        "seed_runs", "shard_of",
    ),
    "session": (
        "Finished", "JobStopped", "NothingToRun", "RankFailed", "Resuming", "RowNotStored", "RunEnded", "RunOptions",
        "RunSession", "RunStarted", "Starting", "StepDone",
    ),
    "verify_ranks": ("distributed_table",),
    "worker": ("torchrun_job",),
}
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC)
