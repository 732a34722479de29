"""How one number is made: `run_one(suite, strategy, seed)` -> `RunRecord`. No file I/O.

`run_one` is the table of contents, read top to bottom: prepare the seed's data, model and plan; warm up on
batches set aside for it, then put the seeded weights back; train with every step timed (batch preparation
timed apart, evaluations between segments and off the clock); gather a DDP job's ranks; take the steady
state; time the unpadded reference; evaluate twice, through the strategy's own path and exactly per
sequence; make the row. Each phase is a function returning a small frozen record.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import Splits, length_histogram, length_percentiles
from ..errors import RunFailed
from ..strategies import (
    Strategy,
    batches,
    exact_strategy,
    note_for,
    plan_ranks,
    planned_wait_fraction,
    row_fields as loader_fields,
)
from ..suite import StrategySpec, Suite
from .ddp import Group, RankTimes
from .evaluation import accuracy_by_length, resolution, robust_time_to_target, time_to_target
from .loop import (
    SEAMS,
    Progress,
    check_finite,
    compile_counts,
    out_of_memory_as_row,
    window_rates,
)
from .machine import MachineWatch
from .model import LSTMClassifier, Precision, weights_checksum
from .probes import (
    Clock,
    TensorMemory,
    peak_memory_bytes,
    peak_memory_reserved_bytes,
    reset_peak_memory,
)
from .record import RunRecord, collect_env, identity
from .reference import Reference, copy_model, measure_reference, reference_sample
from .setup import Run, prepare
from .timing import ColdWarm, StepTimer, cold_warm
from .user_model import parameter_count


def run_one(suite: Suite, spec: StrategySpec, seed: int, device: torch.device,
            progress: Progress | None = None, group: Group | None = None, data: Splits | None = None,
            ) -> RunRecord | None:
    """One run. With a `group` (a DDP job), every rank trains its own column of the distributed plan and
    rank 0 returns the record of the whole job; the other ranks return None. `data`: the seed's splits, made
    once for all its runs (datacache); without it, the run makes them."""
    # the seed's data and model, the plan of batches, the kernel it runs, the equivalence check of its path
    run = prepare(suite, spec, seed, device, group, data)
    # untimed steps on batches set aside for it; then the seeded weights are put back
    warm = warm_up_run(run)
    # the timed steps, in segments between evaluations; the clock is read after the device is synchronised
    timed = train_timed(run, progress)
    # a DDP job: every rank's times and tokens, on rank 0 (the other ranks are done here)
    timed = gather_ranks(run, timed)
    if timed is None:
        return None
    # steady state: each shape's first occurrence at its steady time, what new shapes cost apart
    steady = steady_state(run, warm, timed)
    # the same batches without padding, timed the same way in this process (the reference has none)
    reference = unpadded_reference(run, timed)
    # off the clock: accuracy through the strategy's own path (per example, by length) and exactly
    final = final_evaluation(run, timed, steady)
    # the row: identity, timing, memory, accuracy, time to target, the checks, the machine
    return record(run, warm, timed, steady, reference, final)


WARMUP_SEED = 2**32  # warm-up batches: the plan of seed + 2**32, a shuffle no real seed (< 2**32) makes


@dataclass(frozen=True)
class Warm:
    """The warm-up: every rank's batches (another shuffle of the same examples) and each step's time."""
    steps: list[list[np.ndarray]]
    times: list[float]


def warm_up_run(run: Run) -> Warm:
    """Untimed steps on batches set aside for it, not the ones then timed: the timed steps pay for the shapes
    warm-up did not see, as a user's run does (shape_warmup_s measures it). The seeded weights go back after."""
    suite, train, world = run.suite, run.train, run.world
    steps = plan_ranks(run.strategy, train, suite.train.batch_size, 1, run.seed + WARMUP_SEED,
                       world)[:suite.train.warmup_steps]
    scales = [world / sum(run.strategy.scored(train, idx) for idx in step) for step in steps] if run.group else None
    timer = StepTimer(run.device, synchronous=bool(run.group))
    # on the model itself, so that compiled graphs and kernel caches are the ones the timed loop uses
    optimizer, precision = torch.optim.Adam(run.model.parameters(), lr=suite.train.lr), run.precision
    with timer.segment():
        for i, step in enumerate(steps):
            idx = step[run.rank]
            with out_of_memory_as_row(i - len(steps), run.strategy.shape(train, idx)):  # negative: a warm-up step
                start = timer.mark()
                SEAMS.step(run.net, optimizer, run.strategy.collate(train, idx).to(run.device), run.strategy.readout,
                           precision, scales[i] if scales else None)
                timer.step(start, timer.mark())
    run.model.load_state_dict(run.initial)
    if weights_checksum(run.model) != run.checksum:
        raise RunFailed("error", "warm-up left the model's weights changed; the run would not be comparable")
    return Warm(steps, timer.step_times())


@dataclass(frozen=True)
class Timed:
    """What the timed steps measured (for a DDP job, after gathering: the job's)."""
    plan: list[np.ndarray]  # the batches trained (fewer than planned when the run stopped at its target)
    steps: list[list[np.ndarray]]
    step_times: list[float]
    segments: list[tuple[int, float]]  # (steps done at the segment's end, its time)
    raw_time: float  # CUDA: wall time between synchronisations; CPU: the steps' sum
    data_time: float
    data_wait_s: float | None  # host time waited for batches (one process)
    data_times: list[float]  # per step
    compute_times: list[float]  # DDP: each rank's compute to its last gradient bucket, per step
    losses: list[float]
    step_tokens: list[int]  # each step's real tokens (a DDP job: the union's)
    real_tokens: int
    padded_tokens: int
    evals: list[tuple[int, float]]  # (steps done, accuracy) at each periodic evaluation
    eval_times: list[float]
    peak: int
    peak_reserved: int | None
    train_mem: int
    machine: dict[str, Any]
    precision: Precision  # the timed loop's (its loss scaler)
    optimizer: torch.optim.Optimizer
    ranks: RankTimes | None = None


def train_timed(run: Run, progress: Progress | None) -> Timed:
    """The timed loop, in segments between periodic evaluations (off the clock); until the target, at most
    the time cap, where the suite says so (MLPerf's rule)."""
    suite, train, device, group, rank = run.suite, run.train, run.device, run.group, run.rank
    optimizer = torch.optim.Adam(run.model.parameters(), lr=suite.train.lr)
    precision = run.precision  # a fresh loss scaler, as for the warm-up
    plan, steps = run.plan, run.steps
    reset_peak_memory(device)
    clock = Clock(device)
    timer = StepTimer(device, synchronous=bool(group))  # CUDA: events, no synchronisation inside a segment
    watch = MachineWatch.start(device)  # what else ran on the machine during the timed steps
    until = suite.train.until_target and not run.reference_run  # the ideal has no accuracy to reach
    # until the target: evaluations 8 times an epoch unless the suite says, so the time to it is read finely
    every = 0 if run.reference_run else suite.train.eval_every or (max(1, run.per_epoch // 8) if until else 0)
    target, cap = suite.train.target_accuracy, suite.train.max_time_s
    run.model.train()
    data_times, compute_times, losses, evals, step_tokens, peaks, eval_times = [], [], [], [], [], [], []
    real_tokens = padded_tokens = 0
    ends = [s for s in range(every, len(plan), every)] if every else []
    feed = batches(run.strategy, train, plan, device, suite.train.loader)  # in-process, or a DataLoader's workers
    for start, end in zip([0] + ends, ends + [len(plan)]):  # segments: the steps between two evaluations
        with timer.segment():
            for step in range(start, end):
                idx = plan[step]
                with out_of_memory_as_row(step, run.strategy.shape(train, idx)):
                    t0 = timer.mark()
                    if run.ready:
                        run.ready.start(t0)
                    batch, wait = next(feed)  # host time waited for the batch (collate and copy, or workers)
                    data_times.append(wait)
                    loss = SEAMS.step(run.net, optimizer, batch, run.strategy.readout, precision,
                                      run.scales[step] if run.scales else None)
                    timer.step(t0, timer.mark())
                losses.append(loss.detach())
                if not timer.events:  # a host clock: the loss is ready, check it now
                    check_finite(losses[-1:], step, rank if group else None)
                if run.ready:
                    compute_times.append(run.ready.compute_s())
                real_tokens += batch.real_tokens
                padded_tokens += batch.padded_tokens
                step_tokens.append(batch.real_tokens)
                if progress:
                    progress(step + 1, len(plan))
        if timer.events:  # one look at the segment's losses, after its synchronisation
            check_finite(losses[start:end], start, rank if group else None)
        peaks.append((peak_memory_bytes(device), peak_memory_reserved_bytes(device) or 0))  # before evaluating
        if end < len(plan):  # between segments: off the clock
            if rank == 0:
                t_eval = clock.now()
                accuracy, _ = SEAMS.evaluate(run.evaluated, run.strategy, run.splits.eval, suite.eval_batch_size,
                                             device, precision)
                evals.append((end, accuracy))
                eval_times.append(clock.now() - t_eval)
            if group:
                group.barrier()  # the other ranks wait here, not inside the next step's all-reduce
            reset_peak_memory(device)  # the evaluation's memory is not the training's
            if until and (accuracy >= target or cap and sum(t for _, t in timer.segment_times()) >= cap):
                plan, steps = plan[:end], steps[:end]  # MLPerf's rule: the run ends at the target, or at the cap
                break
    feed.close()  # a DataLoader's workers end here, off the clock
    peak, peak_reserved = max(p for p, _ in peaks), (max(r for _, r in peaks) if device.type == "cuda" else None)
    # CUDA: the allocator's peak over the timed steps; CPU: the tensors of the largest batches' steps, counted
    train_mem = peak if device.type == "cuda" else max(
        step_memory_bytes(run.model, optimizer, run.strategy, train, idx, precision)
        for idx in {id(i): i for i in (run.costliest, max(plan, key=lambda i: run.strategy.real_tokens(train, i)))
                    }.values())
    machine = watch.stop()
    segments = timer.segment_times()
    return Timed(plan, steps, timer.step_times(), segments, float(sum(t for _, t in segments)),
                 float(sum(data_times)), float(sum(data_times)), data_times, compute_times,
                 torch.stack(losses).float().tolist(), step_tokens, real_tokens, padded_tokens, evals, eval_times,
                 peak, peak_reserved, train_mem, machine, precision, optimizer)


def gather_ranks(run: Run, timed: Timed) -> Timed | None:
    """A DDP job's figures on rank 0: the job's training time (the slowest rank's), its tokens, each step's
    union of real tokens over its slowest rank's time; None on the other ranks."""
    if run.group is None:
        return timed
    ranks = RankTimes.gather(run.group, timed.step_times, timed.compute_times, timed.data_times, timed.real_tokens,
                             timed.padded_tokens, (timed.peak, timed.train_mem), run.checksum, timed.losses)
    if run.rank != 0:
        return None
    step_times = list(ranks.step_times)
    ends = [n for n, _ in timed.segments]
    return dataclasses.replace(
        timed, ranks=ranks, losses=list(ranks.losses), raw_time=ranks.train_time_s, data_time=ranks.data_time_s,
        data_wait_s=None, real_tokens=ranks.real_tokens, padded_tokens=ranks.padded_tokens,
        peak=ranks.peak_mem_bytes, train_mem=ranks.train_mem_bytes, step_times=step_times,
        step_tokens=[sum(run.strategy.real_tokens(run.train, idx) for idx in step) for step in timed.steps],
        segments=[(n, float(sum(step_times[a:n]))) for a, n in zip([0] + ends, ends)])


@dataclass(frozen=True)
class Steady:
    """Steady state: the training time with each shape's first occurrence at its steady time, and the
    headline figure, tokens/s, made here alone."""
    train_time: float
    cold_warm: ColdWarm
    keys: list[tuple]  # per step (warm-up, then timed), every rank's batch shapes
    windows: list[float]
    real_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.train_time


def steady_state(run: Run, warm: Warm, timed: Timed) -> Steady:
    """What new batch shapes cost, set apart (cold_warm), and the steady tokens/s per window."""
    # every rank's shapes of a step make its key: a new shape on any rank is paid by all
    keys = [tuple(run.strategy.shape(run.train, idx) for idx in step) for step in warm.steps + timed.steps]
    cw = cold_warm(warm.times, timed.step_times, keys, [sum(b * t for b, t in key) for key in keys])
    train_time = timed.raw_time - cw.timed_extra()  # steady state: the first occurrences at their steady time
    return Steady(train_time, cw, keys, window_rates(timed.step_tokens, cw.timed_steady), timed.real_tokens)


def unpadded_reference(run: Run, timed: Timed) -> Reference | None:
    """After the peak memory was read (the reference's copy is not the run's memory); none for a DDP job or
    the reference itself."""
    if run.group or run.reference_run:
        return None
    return measure_reference(run.model, run.initial, run.strategy, run.train,
                             reference_sample(timed.plan, run.per_epoch), run.device, timed.precision,
                             run.suite.train)


@dataclass(frozen=True)
class Final:
    """The final evaluations and the accuracy curve against training time (steady, cold, with evaluations)."""
    accuracy: float | None
    accuracy_exact: float | None
    loss_exact: float | None
    by_length: list | None
    eval_time: float
    curve: list[list[float]]
    cold: list[list[float]]
    with_eval: list[list[float]]


def final_evaluation(run: Run, timed: Timed, steady: Steady) -> Final:
    """Accuracy through the strategy's own path (per example, by length bin) and exactly per sequence, off
    the clock; the curve at each evaluation."""
    suite, held_out, device = run.suite, run.splits.eval, run.device
    evals, eval_times = list(timed.evals), list(timed.eval_times)
    clock = Clock(device)
    t_eval = clock.now()
    accuracy = accuracy_exact = loss_exact = by_length = None
    if not run.reference_run:
        accuracy, _, hits = SEAMS.evaluate(run.evaluated, run.strategy, held_out, suite.eval_batch_size, device,
                                           timed.precision, per_example=True)
        if not evals or evals[-1][0] != len(timed.plan):  # a run stopped at its target was just evaluated there
            evals.append((len(timed.plan), accuracy))
            eval_times.append(clock.now() - t_eval)
        by_length = accuracy_by_length(held_out, hits)
        accuracy_exact, loss_exact = SEAMS.evaluate(run.evaluated, exact_strategy(), held_out, suite.eval_batch_size,
                                                    device, timed.precision)
    eval_time = clock.now() - t_eval
    curve, cold, with_eval = accuracy_curves(timed.segments, evals, eval_times, steady.cold_warm)
    return Final(accuracy, accuracy_exact, loss_exact, by_length, eval_time, curve, cold, with_eval)


Curve = list[list[float]]  # [training seconds, steps, accuracy] at each evaluation


def accuracy_curves(segments: list[tuple[int, float]], evals: list[tuple[int, float]], eval_times: list[float],
                    cw: ColdWarm) -> tuple[Curve, Curve, Curve]:
    """The accuracy at each evaluation against training time: steady-state seconds so far; cold, what a user's
    first run paid by then; and with the evaluations until then (MLPerf's clock). Keras runs share it."""
    elapsed = dict(zip([n for n, _ in segments], np.cumsum([t for _, t in segments]).tolist()))
    curve = [[elapsed[n] - cw.timed_extra(n), n, acc] for n, acc in evals]
    cold = [[elapsed[n] + cw.warmup_extra, n, acc] for n, acc in evals]
    with_eval = [[t + sum(eval_times[:k + 1]), n, acc] for k, (t, n, acc) in enumerate(cold)]
    return curve, cold, with_eval


def target_fields(curves: tuple[Curve, Curve, Curve], target: float, step_tokens: list[int],
                  windows: list[float]) -> dict[str, Any]:
    """A row's time-to-target fields, read from its curves (accuracy_curves); Keras runs share it."""
    curve, cold, with_eval = curves
    tokens_to_target, robust = robust_time_to_target(curve, target, step_tokens, windows)
    return dict(target_accuracy=target or None, time_to_target_s=time_to_target(curve, target),
                time_to_target_cold_s=time_to_target(cold, target),
                time_to_target_with_eval_s=time_to_target(with_eval, target),
                time_to_target_resolution_s=resolution(curve, target), tokens_to_target=tokens_to_target,
                time_to_target_robust_s=robust)


def record(run: Run, warm: Warm, timed: Timed, steady: Steady, reference: Reference | None,
           final: Final) -> RunRecord:
    """The run's row."""
    suite, spec, train, target = run.suite, run.spec, run.train, run.suite.train.target_accuracy
    cw, plan, steps = steady.cold_warm, timed.plan, timed.steps
    to_target = target_fields((final.curve, final.cold, final.with_eval), target, timed.step_tokens, steady.windows)
    quantiles = np.quantile(cw.timed_steady, [0.1, 0.5, 0.9])
    check = run.check
    return RunRecord(
        **identity(suite, spec, run.seed, run.device.type, note_for(spec, suite)), status="ok",
        steps=len(plan), warmup_steps=len(warm.steps), warmup_time_s=float(sum(warm.times)),
        shape_warmup_s=cw.shape_warmup_s, train_time_cold_s=timed.raw_time + cw.warmup_extra,
        distinct_shapes=len({shape for key in steady.keys[len(warm.steps):] for shape in key}),
        lstm_kernel=run.kernel, lstm_dtype=run.lstm_dtype, loss_scaled=timed.precision.scaler is not None,
        real_tokens=timed.real_tokens, padded_tokens=timed.padded_tokens,
        pad_fraction=1 - timed.real_tokens / timed.padded_tokens,
        train_time_s=steady.train_time, data_time_s=timed.data_time,
        data_time_fraction=timed.data_time / steady.train_time,
        samples_per_s=sum(len(i) for step in steps for i in step) / steady.train_time,
        tokens_per_s=steady.tokens_per_s,
        step_time_median_s=float(quantiles[1]), step_time_p10_s=float(quantiles[0]),
        step_time_p90_s=float(quantiles[2]),
        peak_mem_bytes=timed.peak, peak_mem_reserved_bytes=timed.peak_reserved, train_mem_bytes=timed.train_mem,
        baseline_rss_bytes=run.baseline_rss,
        eval_accuracy=final.accuracy, eval_accuracy_exact=final.accuracy_exact, eval_loss_exact=final.loss_exact,
        curve=final.curve, **to_target,
        reached_target=None if not target or run.reference_run else to_target["time_to_target_s"] is not None,
        accuracy_by_length=final.by_length or [],
        train_length_histogram=length_histogram(train.lengths),
        train_length_percentiles=length_percentiles(train.lengths),
        final_loss=float(np.mean(timed.losses[-run.per_epoch:])), init_checksum=run.checksum,
        model_source_hash=getattr(run.model, "source_hash", ""), model_params=parameter_count(run.model),
        data_checksum=run.splits.checksum(), threads=torch.get_num_threads(),
        eval_time_s=final.eval_time, eval_periodic_time_s=float(sum(timed.eval_times)),
        window_tokens_per_s=steady.windows,
        **(compile_counts() if suite.train.compile else {}), **loader_fields(suite.train.loader),
        data_wait_s=timed.data_wait_s,
        **({"verified": check.verdict, "verify_loss_rel_error": check.loss_rel_error,
            "verify_grad_rel_error": check.grad_rel_error, "verify_tolerance": check.tolerance,
            "verify_precision": check.precision} if check else {}),
        **(reference.fields(steady.tokens_per_s) if reference else {}),
        **(timed.ranks.fields(planned_wait_fraction(run.strategy, train, steps)) if timed.ranks else {}),
        env={**collect_env(_device_name(run.device), torch.get_num_threads()), **timed.machine},
    )


def step_memory_bytes(model: LSTMClassifier, optimizer: torch.optim.Optimizer, strategy: Strategy, data: Any,
                      idx: np.ndarray, precision: Precision) -> int:
    """CPU: the peak tensor memory of one training step on the batch `idx`, counted by TensorMemory: the weights,
    gradients and Adam state as the run left them, the batch, and all the step allocates. On copies of the model
    and optimizer (the run's are left as they are), eager, off the clock."""
    model = copy_model(model)
    optim = torch.optim.Adam(model.parameters(), lr=optimizer.defaults["lr"])
    optim.load_state_dict(optimizer.state_dict())
    batch = strategy.collate(data, idx)
    with TensorMemory() as memory:
        memory.hold([*model.parameters(), *(p.grad for p in model.parameters()), batch.tokens, batch.lengths,
                     batch.labels, *(t for state in optim.state.values() for t in state.values())])
        SEAMS.step(model, optim, batch, strategy.readout, precision)
    return memory.peak


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
