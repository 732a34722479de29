"""A run session: `lstmbench run` as a library. It owns what running a suite involves beyond one run: its sweep
points, resume, a shard of the runs, the ranks of the user's torchrun, the lock on the results folder, and the
policy for each row (appended as its run ends; a row the folder refuses is handed back and the session stops;
under torchrun a failed run stops the job). It yields events; whoever holds it (the CLI, a notebook) renders
them. Nothing here prints or exits.

    with RunSession(load_suite("suites/packing.yaml"), "results", RunOptions(resume=True)) as session:
        for event in session.events():
            ...
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..data import check_data
from ..measure import SETTLE_MAX_S, RunRecord, check_model
from ..results import harness_overhead
from ..suite import Suite, expand_sweep
from .runner import PlannedRun, UntilStable, parse_shard, plan_runs, preflight, run_suite, seed_runs, shard_of


def _storage() -> Any:
    """results.storage, imported when a session stores: it pulls in pandas, which a run's process (re-importing
    the command line) should not hold."""
    from ..results import storage

    return storage


@dataclass(frozen=True)
class RunOptions:
    """How `lstmbench run` runs a suite (its flags)."""
    inline: bool = False  # every run in this process (faster to start; peak memory is then not the run's own)
    resume: bool = False  # skip the (strategy, seed) runs that already have an ok row of this configuration
    shard: str | None = None  # K/N: the K-th of N slices of the runs (run --shard)
    start: str | None = None  # how a run's process begins; None: the forkserver where there is one
    until_stable: UntilStable | None = None  # add seeds until each strategy's tokens/s is stable
    rerun_disturbed: int = 2  # why 2: a burst of load rarely outlasts three runs, and a steady one is said
    settle_s: float = SETTLE_MAX_S  # why: wait up to this long for other processes to leave the CPU



# --- events: what the session reports, in order ---------------------------------------------------------------

@dataclass(frozen=True)
class Resuming:
    """--resume: runs that already have ok rows are skipped."""
    already: int
    to_run: int
    hashes: list[str]


@dataclass(frozen=True)
class NothingToRun:
    empty_shard: str  # the shard that holds no run; '' when every run is done


@dataclass(frozen=True)
class Starting:
    """The first run is about to start; rows go to `path`."""
    suite: Suite
    path: Path
    planned: int  # every run of the suite (all its sweep points)
    variants: int
    to_run: int
    shard: str
    until_stable: UntilStable | None


@dataclass(frozen=True)
class RunStarted:
    """A run begins (to the progress callback, as it happens)."""
    planned: PlannedRun


@dataclass(frozen=True)
class StepDone:
    """A run's training step ends (to the progress callback, as it happens)."""
    step: int
    steps: int


@dataclass(frozen=True)
class RunEnded:
    """A run's row was appended."""
    record: RunRecord
    finished: int


@dataclass(frozen=True)
class RowNotStored:
    """The folder refused a row: the session hands it back (print it, keep it) and stops."""
    record: RunRecord
    error: str
    kept: int  # rows stored before it
    not_started: int
    path: Path


@dataclass(frozen=True)
class JobStopped:
    """Under the user's torchrun a run failed: the other ranks cannot go on in step, so the job stops."""
    finished: int
    path: Path


@dataclass(frozen=True)
class RankFailed:
    """Another rank of the user's torchrun: a run failed here (rank 0 stores the rows)."""
    rank: int
    record: RunRecord


@dataclass(frozen=True)
class Finished:
    """Every run ended: the rows this session stored, read back, and what the harness cost beyond them."""
    path: Path
    rows: Any  # a DataFrame
    finished: int
    failed: int
    overhead: Any  # results.Overhead, or None when no run succeeded
    until_stable: bool  # run --until-stable: each strategy's stability is said


Event = Resuming | NothingToRun | Starting | RunEnded | RowNotStored | JobStopped | RankFailed | Finished
Progress = Callable[[RunStarted | StepDone], None]


class RunSession:
    """A suite's runs into a results folder. The folder is locked from `with` to its end (one run at a time
    into a folder: what --resume reads as done stays so); every sweep point's data and this machine's refusals
    are checked before that, so bad input fails before anything is claimed."""

    def __init__(self, suite: Suite, out: str | Path, options: RunOptions = RunOptions(), group: Any = None):
        self.suite, self.out, self.options, self.group = suite, out, options, group
        self.began = time.perf_counter()
        self.variants = expand_sweep(suite)  # the suite itself unless it sweeps keys
        for variant in self.variants:
            check_data(variant)
            preflight(variant)  # what this machine refuses (no GPU, no bf16), before the folder is made and claimed
            check_model(variant)  # the suite's own model: built and run once, its errors in one line
        planned = [plan_runs(v) for v in self.variants]
        self.slice = parse_shard(options.shard)
        self.planned = shard_of(planned, *self.slice) if self.slice else planned
        self._claim = None

    @property
    def stores(self) -> bool:
        """This process stores rows: not another rank of the user's torchrun."""
        return not (self.group and self.group.rank)

    def __enter__(self) -> RunSession:
        self._claim = _storage().claim(self.out, self.suite.name, self.slice) if self.stores else None
        return self

    def __exit__(self, *_: Any) -> None:
        _storage().release(self._claim)
        self._claim = None

    def events(self, progress: Progress | None = None) -> Iterator[Event]:
        """The session's events, as its runs end. `progress` hears each run start and each step, as they
        happen. A Ctrl-C (KeyboardInterrupt) comes out of the iteration; every row stored before it is kept."""
        done = self._done()
        runs = [[r for r in p if (r.spec.name, r.seed) not in d] for p, d in zip(self.planned, done)]
        if not self.stores:
            yield from self._other_rank(done, runs)
            return
        # made before any run starts, so a device that is not there fails at once
        streams = [run_suite(v, isolate=not self.options.inline, done=d, runs=r, group=self.group,
                             on_start=(lambda p, i, n: progress(RunStarted(p))) if progress else None,
                             on_progress=(lambda s, n: progress(StepDone(s, n))) if progress else None,
                             start=self.options.start, until_stable=self.options.until_stable,
                             rerun_disturbed=self.options.rerun_disturbed, settle_s=self.options.settle_s)
                   for v, d, r in zip(self.variants, done, runs)]
        stable = self.options.until_stable
        total = sum(len(r) for r in runs) if not stable else \
            len(seed_runs(self.suite, 0)) * stable.max_seeds * len(self.variants)
        if self.options.resume:
            yield Resuming(sum(len(p) for p in self.planned) - total, total, [v.hash for v in self.variants])
        if not total:
            yield NothingToRun("" if self.options.resume or not self.slice else self.options.shard)
            return
        run_file = _storage().new_run_file(self.out, self.suite.name)  # the folder proven writable before a run
        yield Starting(self.suite, run_file.path, len(plan_runs(self.suite)) * len(self.variants),
                       len(self.variants), total, self.options.shard or "", stable)
        yield from self._store(streams, run_file, total)

    def _done(self) -> list[dict]:
        """Per sweep point, the runs that already have ok rows (--resume); read by rank 0, broadcast to all."""
        done = [_storage().completed_runs(self.out, v.name, v.hash) if self.options.resume and self.stores else {}
                for v in self.variants]
        return self.group.broadcast(done) if self.group else done

    def _store(self, streams: list[Iterator[RunRecord]], run_file: Any, total: int) -> Iterator[Event]:
        """Each row appended as its run ends; the policy when the folder refuses one, or a run fails under the
        user's torchrun."""
        storage, failed, finished = _storage(), 0, 0
        for record in (record for stream in streams for record in stream):
            record.shard = self.options.shard or ""
            try:
                run_file.append(record.to_dict())
            except storage.AppendFailed as e:  # keep the row (handed back), stop before the next run
                yield RowNotStored(record, str(e), run_file.rows, total - finished - 1, run_file.path)
                return
            finished += 1
            failed += record.status != "ok"
            yield RunEnded(record, finished)
            if record.status != "ok" and self.group:
                yield JobStopped(finished, run_file.path)
                return
        rows = storage.load_rows([run_file.path]).rows
        yield Finished(run_file.path, rows, finished, failed,
                       harness_overhead(rows.to_dict("records"), time.perf_counter() - self.began),
                       self.options.until_stable is not None)

    def _other_rank(self, done: list[dict], runs: list[list[PlannedRun]]) -> Iterator[Event]:
        """Another rank of the user's torchrun: train every run with rank 0, store nothing; a failed run is
        the job's end."""
        for variant, d, r in zip(self.variants, done, runs):
            for failure in run_suite(variant, done=d, runs=r, group=self.group):  # only failures come back here
                yield RankFailed(self.group.rank, failure)
                return
