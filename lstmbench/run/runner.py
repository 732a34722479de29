"""The suite runner: plans the runs (interleaved by seed), runs each, hands each record on at once."""
from __future__ import annotations

import importlib.util
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from ..data import SeedData
from ..errors import LstmbenchError, SuiteError
from ..measure import (
    Disturbance,
    RunRecord,
    cpu_bf16_lstm,
    judge,
    look_at_others,
    memory_bytes,
    resolve_device,
    resolve_model,
    settle,
    training_bytes,
)
from ..suite import IDEAL, MAX_SEED, StrategySpec, Suite
from .worker import guarded, run_inline, run_isolated, run_keras_process, run_torchrun


@dataclass(frozen=True)
class PlannedRun:
    spec: StrategySpec
    seed: int
    position: int = 0  # where the run comes in its seed's shuffled order (recorded in the row)


def plan_runs(suite: Suite, done: Iterable[tuple[str, int]] = ()) -> list[PlannedRun]:
    """Seed 0 of every strategy, then seed 1, ...: slow drift of the machine spreads over all strategies.
    Within a seed, the strategies (the ideal among them) come in an order shuffled by the seed, so that no
    strategy is always first (after a cold start) or always last (on a warmed-up machine). Runs in `done`
    ((strategy, seed) pairs that already have an ok row) are left out; the others keep their positions."""
    skip = set(done)
    return [r for seed in suite.seeds for r in seed_runs(suite, seed) if (r.spec.name, seed) not in skip]


def seed_runs(suite: Suite, seed: int) -> list[PlannedRun]:
    """One seed's runs, in the order that seed shuffles them into."""
    specs = ([IDEAL] if suite.ideal else []) + list(suite.strategies)
    order = np.random.default_rng([seed, 0x0DE5]).permutation(len(specs))
    return [PlannedRun(specs[i], seed, k) for k, i in enumerate(order)]


MIN_STABLE_SEEDS = 3  # fewer runs say nothing about spread: two equal values could be luck


@dataclass(frozen=True)
class UntilStable:
    """`run --until-stable P --max-seeds N` (pyperf's calibration, applied to seeds): seeds are added, every
    strategy still unstable running each, until each strategy's throughput interval lies within +-P% of its
    median (stats.stable) or N seeds are done."""
    percent: float
    max_seeds: int

    def check(self, suite: Suite) -> None:
        """Refuse what cannot run: a percentage that is not a number, seeds past what numpy and torch take."""
        if not math.isfinite(self.percent):
            raise LstmbenchError(f"--until-stable: expected a percentage (e.g. 5), got {self.percent}")
        last = max(suite.seeds) + max(0, self.max_seeds - len(suite.seeds))
        if last > MAX_SEED:
            raise LstmbenchError(f"--until-stable adds seeds after the suite's last, {max(suite.seeds)}: with "
                                 f"--max-seeds {self.max_seeds} they would pass {MAX_SEED} (2**32 - 1, the largest "
                                 "seed); give the suite smaller seeds")

    def seeds(self, suite: Suite) -> Iterator[int]:
        """The suite's seeds, then the next unused ones, N in all."""
        extra = itertools.count(max(suite.seeds) + 1)
        yield from itertools.islice(itertools.chain(suite.seeds, extra), self.max_seeds)


def preflight(suite: Suite) -> str:
    """Everything `run` refuses on this machine before training, in one place: `validate` calls it too, so
    that a suite it calls ok does not fail at its first run. Returns the device type the runs will use."""
    device = resolve_device(suite.device).type
    resolve_model(suite.model, suite.origin)  # the suite's own model's file is there (its code is not run here)
    if suite.train.amp == "fp16" and device != "cuda":
        raise SuiteError(suite.origin, "train.amp", f"fp16 needs a CUDA device, and this suite runs on {device}; "
                                                    "use bf16 or none")
    if suite.train.amp == "bf16" and device == "cpu" and not cpu_bf16_lstm():
        raise SuiteError(suite.origin, "train.amp", "bf16 on this CPU: oneDNN has no bf16 LSTM here (the CPU lacks "
                                                    "avx512_bf16 and AMX); use none, or run on a CPU or GPU with bf16")
    check_memory(suite, device)
    check_keras(suite, device)
    return device


KERAS_PACKAGES = {"tensorflow": ("keras", "tensorflow"), "torch": ("keras",), "jax": ("keras", "jax")}


def check_keras(suite: Suite, device: str) -> None:
    """A Keras strategy needs Keras and its backend installed (the keras extra), and runs on the CPU."""
    for i, spec in enumerate(suite.strategies):
        if spec.framework != "keras":
            continue
        missing = [p for p in KERAS_PACKAGES[spec.backend] if importlib.util.find_spec(p) is None]
        if missing:
            extra = "keras-jax" if spec.backend == "jax" else "keras"
            raise SuiteError(suite.origin, f"strategies[{i}]", f"{spec.name} trains with Keras on {spec.backend}, "
                                                               f"and this Python has no {' or '.join(missing)}: "
                                                               f"install the {extra} extra (pip install "
                                                               f"'lstmbench[{extra}]')")
        if device != "cpu":
            raise SuiteError(suite.origin, f"strategies[{i}]", f"{spec.name}: Keras strategies run on the CPU (their "
                                                               f"GPU path is not measured yet), and this suite runs "
                                                               f"on {device}")


def check_memory(suite: Suite, device: str) -> None:
    """Refuse a model whose weights, gradients and optimizer state alone exceed the device's memory (it could
    only fail, or on a CPU, swap for hours)."""
    need, have = training_bytes(suite), memory_bytes(device)
    if have and need > have:
        raise SuiteError(suite.origin, "model", f"needs {need / 2**30:,.1f} GiB for the weights, gradients and "
                                                f"Adam's two moments alone, and this {device} has "
                                                f"{have / 2**30:,.1f} GiB; make the model smaller")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`--shard K/N` -> (K, N), 1 <= K <= N; None for None."""
    if text is None:
        return None
    k, sep, n = text.partition("/")
    digits = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() also takes '²', which int() refuses
    if not (sep and digits.fullmatch(k) and digits.fullmatch(n) and 1 <= int(k) <= int(n)):
        raise LstmbenchError(f"--shard: expected K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
    return int(k), int(n)


def shard_of(plans: list[list[PlannedRun]], k: int, n: int) -> list[list[PlannedRun]]:
    """The K-th (1-based) of N slices of the runs of a suite's variants (one plan per sweep point): the
    strategy runs dealt round-robin, plus the ideal of each seed a slice holds, so that each shard's report
    has the unpadded row of its own machine."""
    counter = iter(range(sum(len(p) for p in plans)))
    mine = [[r for r in plan if r.spec != IDEAL and next(counter) % n == k - 1] for plan in plans]
    return [[r for r in plan if r in chosen or (r.spec == IDEAL and r.seed in {c.seed for c in chosen})]
            for plan, chosen in zip(plans, mine)]


def run_suite(suite: Suite, isolate: bool = True, done: Mapping[tuple[str, int], float] | None = None,
              on_start: Callable[[PlannedRun, int, int], None] | None = None,
              on_progress: Callable[[int, int], None] | None = None,
              runs: list[PlannedRun] | None = None, group: Any = None, start: str | None = None,
              until_stable: UntilStable | None = None, rerun_disturbed: int = 0,
              settle_s: float = 0.0) -> Iterator[RunRecord]:
    """Yield one record per planned run, as each ends; the caller stores it before the next starts.

    `done` maps (strategy, seed) of runs already stored (ok, same suite hash) to their tokens/s: they are
    not run again (`--resume`).
    `runs` (default: all of plan_runs) says which to run. With `group` (this process is a rank of a torchrun
    job the user started), every rank runs every planned run in that group; rank 0 gets the records.
    `start`: how isolated runs begin (worker.START_METHODS; default forkserver where there is one).
    `until_stable`: seeds are added until every strategy's throughput is stable (`runs` is then not used).
    `settle_s`: before each run, wait up to this long for other processes to leave the CPU (disturbance.settle).
    `rerun_disturbed`: a one-process run measured while other processes took the CPU is run again, up to this
    many times; the row kept is the first quiet attempt (or the last), listing the disturbed ones before it.
    Each seed's data is made once, here, and handed to its runs (datacache); DDP ranks make their own.
    Checks the device at once (not at the first run), so a suite asking for an absent GPU fails early."""
    device = preflight(suite)
    if suite.launch.nproc > 1 and not isolate and group is None:
        raise SuiteError(suite.origin, "launch.nproc", f"is {suite.launch.nproc}: a DDP job needs its own "
                                                       "processes, which --inline does not start")
    keras = next((i for i, spec in enumerate(suite.strategies) if spec.framework == "keras"), None)
    if group is not None and keras is not None:  # every rank would train it alone, side by side
        raise SuiteError(suite.origin, f"strategies[{keras}]", "a Keras strategy trains in one process of its own; "
                                                               "run this suite without torchrun")
    done = done or {}
    runs = plan_runs(suite, done) if runs is None else [r for r in runs if (r.spec.name, r.seed) not in done]

    execution = _Execution(suite, device, isolate, group, start, on_progress, rerun_disturbed, settle_s)
    return _stable_records(execution, until_stable, on_start) if until_stable else \
        _records(execution, runs, on_start)


@dataclass(frozen=True)
class _Execution:
    """How each planned run of a suite is carried out: in which process, how often again when disturbed."""
    suite: Suite
    device: str
    isolate: bool
    group: Any
    start: str | None
    on_progress: Callable[[int, int], None] | None
    rerun_disturbed: int
    settle_s: float

    def execute(self, planned: PlannedRun, cache: SeedData) -> RunRecord | None:
        """One attempt: a rank of the user's torchrun, a torchrun job, this process, or a process of its own."""
        suite, spec, seed, device = self.suite, planned.spec, planned.seed, self.device
        if spec.framework == "keras":  # a fresh interpreter of its backend, even --inline
            folder = cache.folder(suite, seed)
            return run_keras_process(suite, spec, seed, device, self.on_progress, str(folder) if folder else None)
        if self.group is not None:
            return guarded(suite, spec, seed, device, self.on_progress, group=self.group)
        if suite.launch.nproc > 1:
            record = run_torchrun(suite, spec, seed, device, self.on_progress)
            record.start_method = "torchrun"
            return record
        if not self.isolate:
            return run_inline(suite, spec, seed, device, self.on_progress, data=cache.splits(suite, seed))
        folder = cache.folder(suite, seed)
        return run_isolated(suite, spec, seed, device, self.on_progress, str(folder) if folder else None,
                            self.start)

    def measured(self, planned: PlannedRun, cache: SeedData) -> RunRecord | None:
        """The run, after a bounded wait for a quiet machine, run again while other processes took the CPU
        (up to rerun_disturbed times): the row kept lists the disturbed attempts before it."""
        earlier: list[dict[str, Any]] = []
        while True:
            settled = settle(look_at_others, self.settle_s) if self.settle_s > 0 and self.group is None else None
            record = self.execute(planned, cache)
            if record is None:
                return None
            if settled is not None:
                record.env.update(settled.fields())
            verdict = judge(record.to_dict()) if record.status == "ok" else None
            record.disturbance = verdict.value if verdict else ""
            record.disturbed_attempts = earlier
            if verdict is not Disturbance.DISTURBED or len(earlier) >= self.rerun_disturbed:
                return record
            earlier = earlier + [{"tokens_per_s": record.tokens_per_s, **{
                k: record.env.get(k) for k in ("run_wait_share", "other_cpu_share")}}]


def _records(execution: _Execution, runs: list[PlannedRun],
             on_start: Callable[[PlannedRun, int, int], None] | None) -> Iterator[RunRecord]:
    """The planned runs in order, each seed's data made once."""
    with SeedData() as cache:
        for i, planned in enumerate(runs):
            if on_start:
                on_start(planned, i, len(runs))
            record = execution.measured(planned, cache)
            if record is None:  # a rank other than 0: the record is rank 0's to store
                continue
            record.position = planned.position
            yield record


def _stable_records(execution: _Execution, until_stable: UntilStable,
                    on_start: Callable[[PlannedRun, int, int], None] | None) -> Iterator[RunRecord]:
    """Seed after seed, each strategy until its throughput is stable or the seeds run out."""
    from ..stats import stable  # scipy: imported only when asked for, not by every `run`

    suite = execution.suite
    values: dict[str, list[float]] = {}
    seeds = list(until_stable.seeds(suite))
    active = {r.spec.name for r in seed_runs(suite, seeds[0])}
    i = 0
    with SeedData() as cache:
        for n, seed in enumerate(seeds, 1):
            for planned in [r for r in seed_runs(suite, seed) if r.spec.name in active]:
                if on_start:
                    on_start(planned, i, len(active) * (len(seeds) - n + 1) + i)
                i += 1
                record = execution.measured(planned, cache)
                record.position = planned.position
                if record.status == "ok":
                    values.setdefault(record.strategy, []).append(record.tokens_per_s)
                if stable(values.get(record.strategy, []), until_stable.percent / 100, MIN_STABLE_SEEDS):
                    record.until_stable = "stable"
                    active.discard(record.strategy)
                elif n == len(seeds):
                    record.until_stable = "limit"
                record.until_stable_percent = until_stable.percent
                yield record
            if not active:
                return
