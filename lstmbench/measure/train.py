"""Stage 5, the train/eval loop: `run_one(suite, strategy, seed)` -> `RunRecord`. No file I/O.

Read top to bottom: build the seed's data and model, warm up on a scratch copy (every batch shape once),
train with every step timed (batch preparation timed apart, periodic evaluations between steps and off
the clock), then evaluate twice: through the strategy's own path and exactly per sequence.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..data import Dataset, Splits, length_histogram, length_percentiles, make_data
from ..errors import RunFailed
from ..strategies import (
    Batch,
    Strategy,
    batches,
    exact_strategy,
    note_for,
    plan_ranks,
    planned_wait_fraction,
    row_fields as loader_fields,
)
from ..suite import LoaderConfig, StrategySpec, Suite
from .ddp import Group, RankTimes, rank_device, wrap
from .evaluation import accuracy_by_length, evaluate, resolution, robust_time_to_target, time_to_target
from .machine import MachineWatch
from .model import LSTMClassifier, Precision, loss_of, model_for, weights_checksum
from .probes import (
    Clock,
    KernelProbe,
    TensorMemory,
    out_of_memory,
    peak_memory_bytes,
    peak_memory_reserved_bytes,
    reset_peak_memory,
    rss_bytes,
)
from .record import RunRecord, collect_env, identity
from .timing import StepTimer, cold_warm
from .verify import check_run

Progress = Callable[[int, int], None]  # (steps done, steps in all)


def run_one(suite: Suite, spec: StrategySpec, seed: int, device: torch.device,
            progress: Progress | None = None, group: Group | None = None, data: Splits | None = None,
            ) -> RunRecord | None:
    """One run. With a `group` (a DDP job), every rank trains its own column of the distributed plan and
    rank 0 returns the record of the whole job; the other ranks return None. `data`: the seed's splits, made
    once for all its runs (datacache); without it, the run makes them."""
    if suite.threads:
        torch.set_num_threads(suite.threads)
    torch.backends.cudnn.benchmark = suite.train.cudnn_benchmark
    device = rank_device(device, group)
    rank, world = (group.rank, group.world) if group else (0, 1)
    reset_peak_memory(torch.device("cpu"))  # the run's own peak on CPU, not the imports' (Linux)
    baseline_rss = rss_bytes()
    strategy = Strategy(spec)
    is_ideal = spec.padding == "reshape"  # the reference trains on scrambled rows: its accuracy means nothing
    splits = data if data is not None else make_data(suite.data, seed, suite.origin)
    train, held_out = splits.train, splits.eval
    model = model_for(suite.model, train, seed)
    checksum = weights_checksum(model)
    model.to(device)
    precision = Precision(device.type, suite.train.amp)
    steps = plan_ranks(strategy, train, suite.train.batch_size, suite.train.epochs, seed, world)
    per_epoch = len(steps) // suite.train.epochs
    if is_ideal and suite.train.until_target:  # it has no target to reach: one epoch measures its speed
        steps = steps[:per_epoch]
    plan = [step[rank] for step in steps]
    # DDP averages the ranks' gradients; scaling each rank's summed loss by world / (the step's count over
    # all ranks) makes the average the gradient of the mean over the union of the ranks' batches
    scales = [world / sum(strategy.scored(train, idx) for idx in step) for step in steps] if group else None
    # the costliest batch, where most time goes (a packed batch of equal lengths would run a fused kernel)
    costliest = max(plan, key=lambda idx: int(np.prod(strategy.shape(train, idx))))
    kernel, lstm_dtype = probe_kernel(model, strategy, train, costliest, device, precision)
    precision = Precision(device.type, suite.train.amp, lstm_dtype)  # a loss scaler where the LSTM runs fp16
    check = None
    if not group and not is_ideal:  # equivalence on the path this run times: its kernel, device and precision
        check = check_run(model, strategy, train, [check_batch(plan, train.lengths)], device, suite.train.amp,
                          note_for(spec, suite))
    net = torch.compile(model) if suite.train.compile else model  # the same parameters either way
    evaluated = net  # evaluation runs outside DDP, on rank 0 alone
    ready = None
    if group:
        net, ready = wrap(net, device)

    # the seeded weights, kept on the CPU (on a GPU a copy would count in the training's memory peak): put back
    # after warm-up, and the reference's
    initial = {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
    # warm-up on batches set aside for it (another shuffle of the same examples), not the ones then timed: the
    # timed steps pay for the shapes warm-up did not see, as a user's run does (shape_warmup_s measures it)
    warm = plan_ranks(strategy, train, suite.train.batch_size, 1, seed + WARMUP_SEED, world)[:suite.train.warmup_steps]
    warm_scales = [world / sum(strategy.scored(train, idx) for idx in step) for step in warm] if group else None
    warm_timer = StepTimer(device, synchronous=bool(group))
    _warm_up(model, net, strategy, train, [step[rank] for step in warm], device, suite.train.lr, precision,
             warm_scales, initial, warm_timer)
    if weights_checksum(model) != checksum:
        raise RunFailed("error", "warm-up left the model's weights changed; the run would not be comparable")
    optimizer = torch.optim.Adam(model.parameters(), lr=suite.train.lr)
    precision = Precision(device.type, suite.train.amp, lstm_dtype)  # a fresh loss scaler, as for the warm-up
    reset_peak_memory(device)

    clock = Clock(device)
    timer = StepTimer(device, synchronous=bool(group))  # CUDA: events, no synchronisation inside a segment
    watch = MachineWatch.start(device)  # what else ran on the machine during the timed steps
    eval_bs = suite.eval_batch_size
    until = suite.train.until_target and not is_ideal  # the ideal has no accuracy to reach
    # until the target: evaluations 8 times an epoch unless the suite says, so the time to it is read finely
    every = 0 if is_ideal else suite.train.eval_every or (max(1, per_epoch // 8) if until else 0)
    target, cap = suite.train.target_accuracy, suite.train.max_time_s
    model.train()
    data_times, compute_times, losses, evals, step_tokens, peaks, eval_times = [], [], [], [], [], [], []
    real_tokens = padded_tokens = 0
    ends = [s for s in range(every, len(plan), every)] if every else []
    feed = batches(strategy, train, plan, device, suite.train.loader)  # in-process, or a DataLoader's workers
    for start, end in zip([0] + ends, ends + [len(plan)]):  # segments: the steps between two evaluations
        with timer.segment():
            for step in range(start, end):
                idx = plan[step]
                with out_of_memory_as_row(step, strategy.shape(train, idx)):
                    t0 = timer.mark()
                    if ready:
                        ready.start(t0)
                    batch, wait = next(feed)  # host time waited for the batch (collate and copy, or workers)
                    data_times.append(wait)
                    loss = train_step(net, optimizer, batch, strategy.readout, precision,
                                      scales[step] if scales else None)
                    timer.step(t0, timer.mark())
                losses.append(loss.detach())
                if not timer.events:  # a host clock: the loss is ready, check it now
                    _check_finite(losses[-1:], step, rank if group else None)
                if ready:
                    compute_times.append(ready.compute_s())
                real_tokens += batch.real_tokens
                padded_tokens += batch.padded_tokens
                step_tokens.append(batch.real_tokens)
                if progress:
                    progress(step + 1, len(plan))
        if timer.events:  # one look at the segment's losses, after its synchronisation
            _check_finite(losses[start:end], start, rank if group else None)
        peaks.append((peak_memory_bytes(device), peak_memory_reserved_bytes(device) or 0))  # before evaluating
        if end < len(plan):  # between segments: off the clock
            if rank == 0:
                t_eval = clock.now()
                accuracy, _ = evaluate(evaluated, strategy, held_out, eval_bs, device, precision)
                evals.append((end, accuracy))
                eval_times.append(clock.now() - t_eval)
            if group:
                group.barrier()  # the other ranks wait here, not inside the next step's all-reduce
            reset_peak_memory(device)  # the evaluation's memory is not the training's
            if until and (accuracy >= target or cap and sum(t for _, t in timer.segment_times()) >= cap):
                plan, steps = plan[:end], steps[:end]  # MLPerf's rule: the run ends at the target, or at the cap
                break
    feed.close()  # a DataLoader's workers end here, off the clock
    periodic_eval_s = float(sum(eval_times))
    losses = torch.stack(losses).float().tolist()
    step_times = timer.step_times()
    peak, peak_reserved = max(p for p, _ in peaks), (max(r for _, r in peaks) if device.type == "cuda" else None)
    # CUDA: the allocator's peak over the timed steps; CPU: the tensors of the largest batches' steps, counted
    train_mem = peak if device.type == "cuda" else max(
        step_memory_bytes(model, optimizer, strategy, train, idx, precision)
        for idx in {id(i): i for i in (costliest, max(plan, key=lambda i: strategy.real_tokens(train, i)))}.values())
    machine = watch.stop()
    segments = timer.segment_times()
    raw_time = float(sum(t for _, t in segments))  # CUDA: wall time between synchronisations; CPU: the steps'
    data_time = float(sum(data_times))
    ranks = reference = None
    if group:
        ranks = RankTimes.gather(group, step_times, compute_times, data_times, real_tokens, padded_tokens,
                                 (peak, train_mem), checksum, losses)
        if rank != 0:
            return None
        losses = list(ranks.losses)
        raw_time, data_time = ranks.train_time_s, ranks.data_time_s
        real_tokens, padded_tokens = ranks.real_tokens, ranks.padded_tokens
        peak, train_mem = ranks.peak_mem_bytes, ranks.train_mem_bytes
        # each step: the union's real tokens over its slowest rank's time
        step_tokens = [sum(strategy.real_tokens(train, idx) for idx in step) for step in steps]
        step_times = list(ranks.step_times)
        segments = [(n, float(sum(step_times[a:n]))) for a, (n, _) in zip([0] + [n for n, _ in segments], segments)]
    # every rank's shapes of a step make its key: a new shape on any rank is paid by all
    keys = [tuple(strategy.shape(train, idx) for idx in step) for step in warm + steps]
    warm_times = warm_timer.step_times()
    cw = cold_warm(warm_times, step_times, keys, [sum(b * t for b, t in key) for key in keys])
    train_time = raw_time - cw.timed_extra()  # steady state: the first occurrences at their steady time
    windows = window_rates(step_tokens, cw.timed_steady)
    if not group and not is_ideal:  # after the peak memory was read: the reference's copy is not the run's memory
        reference = measure_reference(model, initial, strategy, train, reference_sample(plan, per_epoch),
                                      device, suite.train.lr, precision, suite.train.loader)

    t_eval = clock.now()
    accuracy = accuracy_exact = loss_exact = by_length = None
    if not is_ideal:
        accuracy, _, hits = evaluate(evaluated, strategy, held_out, eval_bs, device, precision, per_example=True)
        if not evals or evals[-1][0] != len(plan):  # a run stopped at its target was just evaluated there
            evals.append((len(plan), accuracy))
            eval_times.append(clock.now() - t_eval)
        by_length = accuracy_by_length(held_out, hits)
        accuracy_exact, loss_exact = evaluate(evaluated, exact_strategy(), held_out, eval_bs, device, precision)
    eval_time = clock.now() - t_eval
    # the curve at each evaluation: steady-state seconds so far, and (cold) what a user's first run paid by then
    elapsed = dict(zip([n for n, _ in segments], np.cumsum([t for _, t in segments]).tolist()))
    curve = [[elapsed[n] - cw.timed_extra(n), n, acc] for n, acc in evals]
    cold = [[elapsed[n] + cw.warmup_extra, n, acc] for n, acc in evals]
    with_eval = [[t + sum(eval_times[:k + 1]), n, acc] for k, (t, n, acc) in enumerate(cold)]  # MLPerf's clock
    reached = time_to_target(curve, target)
    tokens_to_target, robust = robust_time_to_target(curve, target, step_tokens, windows)
    quantiles = np.quantile(cw.timed_steady, [0.1, 0.5, 0.9])
    return RunRecord(
        **identity(suite, spec, seed, device.type, note_for(spec, suite)), status="ok",
        steps=len(plan), warmup_steps=len(warm), warmup_time_s=float(sum(warm_times)),
        shape_warmup_s=cw.shape_warmup_s, train_time_cold_s=raw_time + cw.warmup_extra,
        distinct_shapes=len({shape for key in keys[len(warm):] for shape in key}), lstm_kernel=kernel,
        lstm_dtype=lstm_dtype, loss_scaled=precision.scaler is not None,
        real_tokens=real_tokens, padded_tokens=padded_tokens, pad_fraction=1 - real_tokens / padded_tokens,
        train_time_s=train_time, data_time_s=data_time, data_time_fraction=data_time / train_time,
        samples_per_s=sum(len(i) for step in steps for i in step) / train_time,
        tokens_per_s=real_tokens / train_time,
        step_time_median_s=float(quantiles[1]), step_time_p10_s=float(quantiles[0]),
        step_time_p90_s=float(quantiles[2]),
        peak_mem_bytes=peak, peak_mem_reserved_bytes=peak_reserved, train_mem_bytes=train_mem,
        baseline_rss_bytes=baseline_rss,
        eval_accuracy=accuracy, eval_accuracy_exact=accuracy_exact, eval_loss_exact=loss_exact,
        curve=curve, target_accuracy=target or None, time_to_target_s=reached,
        reached_target=None if not target or is_ideal else reached is not None,
        time_to_target_cold_s=time_to_target(cold, target),
        time_to_target_with_eval_s=time_to_target(with_eval, target),
        time_to_target_resolution_s=resolution(curve, target), accuracy_by_length=by_length or [],
        train_length_histogram=length_histogram(train.lengths),
        train_length_percentiles=length_percentiles(train.lengths),
        tokens_to_target=tokens_to_target, time_to_target_robust_s=robust,
        final_loss=float(np.mean(losses[-per_epoch:])), init_checksum=checksum,
        data_checksum=splits.checksum(), threads=torch.get_num_threads(),
        eval_time_s=eval_time, eval_periodic_time_s=periodic_eval_s, window_tokens_per_s=windows,
        **(compile_counts() if suite.train.compile else {}), **loader_fields(suite.train.loader),
        data_wait_s=float(sum(data_times)) if not ranks else None,
        **({"verified": check.verdict, "verify_loss_rel_error": check.loss_rel_error,
            "verify_grad_rel_error": check.grad_rel_error, "verify_tolerance": check.tolerance,
            "verify_precision": check.precision} if check else {}),
        **(reference.fields(real_tokens / train_time) if reference else {}),
        **(ranks.fields(planned_wait_fraction(strategy, train, steps)) if ranks else {}),
        env={**collect_env(_device_name(device), torch.get_num_threads()), **machine},
    )


WARMUP_SEED = 2**32  # warm-up batches: the plan of seed + 2**32, a shuffle no real seed (< 2**32) makes

WINDOWS = 8  # a run's timed steps cut into 8 consecutive windows, each a throughput measurement of its own:
# enough to see a transient disturbance or a drift within the run (pyperf takes 3 values a process), few
# enough that each window still spans many steps (24 of the default suite's 192)


def window_rates(tokens: list[int], times: list[float], windows: int = WINDOWS) -> list[float]:
    """Real tokens per second of each of `windows` consecutive slices of the steps (as many as there are
    steps, if fewer)."""
    k = min(windows, len(times))
    edges = np.linspace(0, len(times), k + 1).round().astype(int)
    return [float(sum(tokens[a:b]) / sum(times[a:b])) for a, b in zip(edges[:-1], edges[1:])]


@dataclass
class Reference:
    """The unpadded reference of a run: its own first epoch of batches, each cut into equal rows of its real
    tokens (`Strategy.unpadded`), trained from the same seeded weights and timed the same way."""
    tokens_per_s: float
    windows: list[float]
    steps: int

    def fields(self, tokens_per_s: float) -> dict[str, Any]:
        return {"reference_tokens_per_s": self.tokens_per_s, "reference_window_tokens_per_s": self.windows,
                "reference_steps": self.steps, "efficiency": tokens_per_s / self.tokens_per_s}


REFERENCE_SHARE = 0.125  # the unpadded reference times at most 1/8 as many steps as the run did (and warms up
# on at most as many again), so it adds at most ~1/4 of the run's step count, at the cheaper unpadded cost
REFERENCE_MIN_STEPS = 16  # but at least this many (or the whole first epoch): fewer would make a noisy figure


def reference_sample(plan: list[np.ndarray], per_epoch: int) -> list[np.ndarray]:
    """The batches the reference times: spread evenly over the run's first epoch, so that their mix of
    lengths is the epoch's."""
    epoch = plan[:per_epoch]
    k = min(len(epoch), max(REFERENCE_MIN_STEPS, math.ceil(REFERENCE_SHARE * len(plan))))
    return [epoch[i] for i in np.linspace(0, len(epoch) - 1, k).round().astype(int)] if k < len(epoch) else epoch


def measure_reference(model: torch.nn.Module, initial: dict[str, torch.Tensor], strategy: Strategy,
                      data: Dataset, plan: list[np.ndarray], device: torch.device, lr: float,
                      precision: Precision, loader: LoaderConfig) -> Reference:
    """What the same batches cost with no padding at all, measured in the run's own process right after its
    training (so the machine's state is the run's): one untimed step of every new shape, then every batch of
    `plan` (reference_sample's) timed as the run's steps are: the same StepTimer (CUDA events, synchronised
    only at the ends), the same input path (the suite's loader: in-process, or workers with pinned memory).
    Its loader starts off the clock (its first batch is fetched before), since the run starts its own once.
    A copy of the model, put back to the seeded weights: the run's trained model is untouched."""
    net = copy_model(model)
    precision = Precision(device.type, precision.amp, precision.lstm_dtype)  # a fresh loss scaler
    unpadded = Unpadded(strategy)
    seen: set[tuple[int, ...]] = set()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for idx in plan:  # warm-up: every shape once
        batch = unpadded.collate(data, idx)
        if tuple(batch.tokens.shape) not in seen:
            seen.add(tuple(batch.tokens.shape))
            train_step(net, optimizer, batch.to(device), "last", precision)
    net.load_state_dict(initial)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    timer, tokens = StepTimer(device), []
    feed = batches(unpadded, data, plan, device, loader)
    first = next(feed, None)  # starts the loader's workers, off the clock
    with timer.segment():
        for step in range(len(plan)):
            t0 = timer.mark()
            batch, _ = first if step == 0 else next(feed)
            train_step(net, optimizer, batch, "last", precision)
            timer.step(t0, timer.mark())
            tokens.append(batch.real_tokens)
    feed.close()
    wall = sum(t for _, t in timer.segment_times())  # CUDA: the segment's wall time, as the run's train_time
    return Reference(sum(tokens) / wall, window_rates(tokens, timer.step_times()), len(plan))


@dataclass(frozen=True)
class Unpadded:
    """A strategy's batches without padding (Strategy.unpadded) as a collate the loader can run, in workers
    too: the reference's input path is the run's."""

    strategy: Strategy

    readout = "last"

    def collate(self, data: Dataset, idx: np.ndarray) -> Batch:
        return self.strategy.unpadded(data, idx)


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy whose LSTMs have their weights in one flat buffer again: a deep copy of a CUDA model loses
    cuDNN's, and every call of the copy would then re-compact them (and warn)."""
    net = copy.deepcopy(model)
    for module in net.modules():
        if isinstance(module, torch.nn.RNNBase):
            module.flatten_parameters()
    return net


CHECKED = 8  # sequences in a run's own equivalence check: the longest of the data and 7 of its batch-mates, so
# that padding, truncation and the readout are exercised while the float64 per-sequence reference stays cheap


def check_batch(plan: list[np.ndarray], lengths: np.ndarray, size: int = CHECKED) -> np.ndarray:
    """The longest sequence and up to size - 1 others from the batch that holds it."""
    longest = int(lengths.argmax())
    batch = next((idx for idx in plan if longest in idx), np.array([longest]))
    return np.array([longest] + [int(i) for i in batch if i != longest][:size - 1])


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, readout: str,
               precision: Precision, scale: float | None = None) -> torch.Tensor:
    """One optimizer step: the only place the model is trained (warm-up and timed loop alike). With `scale`
    (a DDP rank), the loss is the batch's summed loss times `scale`."""
    with precision.autocast():
        logits = net(batch.tokens, batch.lengths, readout, batch.lengths_on_device)
        loss = loss_of(logits, batch.labels) if scale is None else loss_of(logits, batch.labels, "sum") * scale
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss


def step_memory_bytes(model: LSTMClassifier, optimizer: torch.optim.Optimizer, strategy: Strategy, data: Dataset,
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
        train_step(model, optim, batch, strategy.readout, precision)
    return memory.peak


@contextlib.contextmanager
def out_of_memory_as_row(step: int, shape: tuple[int, int]) -> Iterator[None]:
    """An out-of-memory error (on a GPU, or torch's CPU allocator) becomes an `oom` row naming the batch shape
    that did not fit."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only allocation failures are translated; the rest go up unchanged
        if not out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else "out of memory"
        raise RunFailed("oom", f"out of memory at step {step} on a batch of shape {shape}: {first}") from None


def probe_kernel(model: LSTMClassifier, strategy: Strategy, data: Dataset, idx: np.ndarray,
                 device: torch.device, precision: Precision) -> tuple[str, str]:
    """The LSTM implementation a batch of this strategy runs, and the dtype it runs in (one forward pass,
    nothing trained)."""
    batch = strategy.collate(data, idx).to(device)
    with KernelProbe() as probe, precision.autocast():
        model(batch.tokens, batch.lengths, strategy.readout, batch.lengths_on_device)
    return probe.kernel, probe.dtype


def _warm_up(model: LSTMClassifier, net: torch.nn.Module, strategy: Strategy, data: Dataset,
             plan: list[np.ndarray], device: torch.device, lr: float, precision: Precision,
             scales: list[float] | None, saved: dict[str, torch.Tensor], timer: StepTimer) -> None:
    """Untimed steps on the model itself (so compiled graphs and kernel caches are the ones the timed loop
    uses), each step's time kept in `timer` (what the run's start and its first shapes cost), then the seeded
    weights (`saved`, a copy taken before) are put back: every strategy still trains from the same start."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with timer.segment():
        for i, idx in enumerate(plan):
            with out_of_memory_as_row(-len(plan) + i, strategy.shape(data, idx)):  # negative: a warm-up step
                start = timer.mark()
                train_step(net, optimizer, strategy.collate(data, idx).to(device), strategy.readout, precision,
                           scales[i] if scales else None)
                timer.step(start, timer.mark())
    model.load_state_dict(saved)


def compile_counts() -> dict[str, int]:
    """What torch.compile made of the run (its cost is in warmup_time_s and shape_warmup_s): the graphs it
    compiled (one more per recompilation for a new shape) and its graph breaks (Dynamo does not trace an LSTM:
    it breaks there and runs the module eagerly)."""
    from torch._dynamo.utils import counters

    return {"compile_graphs": int(counters["stats"]["unique_graphs"]),
            "compile_graph_breaks": int(sum(counters["graph_break"].values()))}


def _check_finite(losses: list[torch.Tensor], first: int, rank: int | None) -> None:
    """A training loss that is NaN or infinite ends the run as `diverged`, naming the step."""
    for k, value in enumerate(torch.stack(losses).float().tolist()):
        if not math.isfinite(value):
            raise RunFailed("diverged", f"training loss became {value} at step {first + k}" +
                            (f" on rank {rank}" if rank is not None else ""))


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
