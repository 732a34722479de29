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

from .data import Dataset, make_data
from .ddp import Group, RankTimes, rank_device, wrap
from .errors import RunFailed
from .machine import MachineWatch
from .model import LSTMClassifier, correct_of, loss_of, model_for, weights_checksum
from .probes import (Clock, KernelProbe, peak_memory_bytes, peak_memory_reserved_bytes, reset_peak_memory,
                     rss_bytes)
from .ranks import Steps, plan_ranks, planned_wait_fraction
from .records import RunRecord, collect_env, identity
from .strategies import Batch, Strategy, exact_strategy, note_for
from .verify import check_run
from .suite import StrategySpec, Suite

Progress = Callable[[int, int], None]  # (steps done, steps in all)


def run_one(suite: Suite, spec: StrategySpec, seed: int, device: torch.device,
            progress: Progress | None = None, group: Group | None = None) -> RunRecord | None:
    """One run. With a `group` (a DDP job), every rank trains its own column of the distributed plan and
    rank 0 returns the record of the whole job; the other ranks return None."""
    if suite.threads:
        torch.set_num_threads(suite.threads)
    torch.backends.cudnn.benchmark = suite.train.cudnn_benchmark
    device = rank_device(device, group)
    rank, world = (group.rank, group.world) if group else (0, 1)
    reset_peak_memory(torch.device("cpu"))  # the run's own peak on CPU, not the imports' (Linux)
    baseline_rss = rss_bytes()
    strategy = Strategy(spec)
    is_ideal = spec.padding == "reshape"  # the reference trains on scrambled rows: its accuracy means nothing
    splits = make_data(suite.data, seed, suite.origin)
    train, held_out = splits.train, splits.eval
    model = model_for(suite.model, train, seed)
    checksum = weights_checksum(model)
    model.to(device)
    precision = Precision(device.type, suite.train.amp)
    steps = plan_ranks(strategy, train, suite.train.batch_size, suite.train.epochs, seed, world)
    plan = [step[rank] for step in steps]
    # DDP averages the ranks' gradients; scaling each rank's summed loss by world / (the step's count over
    # all ranks) makes the average the gradient of the mean over the union of the ranks' batches
    scales = [world / sum(strategy.scored(train, idx) for idx in step) for step in steps] if group else None
    # the costliest batch, where most time goes (a packed batch of equal lengths would run a fused kernel)
    costliest = max(plan, key=lambda idx: int(np.prod(strategy.shape(train, idx))))
    kernel = probe_kernel(model, strategy, train, costliest, device, precision)
    check = None
    if not group and not is_ideal:  # equivalence on the path this run times: its kernel, device and precision
        check = check_run(model, strategy, train, [check_batch(plan, train.lengths)], device, suite.train.amp,
                          note_for(spec, suite))
    net = torch.compile(model) if suite.train.compile else model  # the same parameters either way
    evaluated = net  # evaluation runs outside DDP, on rank 0 alone
    ready = None
    if group:
        net, ready = wrap(net, device)

    initial = copy.deepcopy(model.state_dict())  # the seeded weights: put back after warm-up, and the reference's
    warmup = warmup_steps(strategy, train, steps, suite.train.warmup_steps)
    _warm_up(model, net, strategy, train, [plan[s] for s in warmup], device, suite.train.lr, precision,
             [scales[s] for s in warmup] if scales else None, initial)
    if weights_checksum(model) != checksum:
        raise RunFailed("error", "warm-up left the model's weights changed; the run would not be comparable")
    optimizer = torch.optim.Adam(model.parameters(), lr=suite.train.lr)
    precision = Precision(device.type, suite.train.amp)  # a fresh loss scaler, as for the warm-up
    reset_peak_memory(device)

    clock = Clock(device)
    watch = MachineWatch.start(device)  # what else ran on the machine during the timed steps
    eval_bs = suite.eval_batch_size
    every = 0 if is_ideal else suite.train.eval_every
    model.train()
    step_times, data_times, compute_times, losses, curve, step_tokens = [], [], [], [], [], []
    real_tokens = padded_tokens = 0
    for step, idx in enumerate(plan):
        with out_of_memory_as_row(step, strategy.shape(train, idx)):
            t0 = clock.now()
            if ready:
                ready.start(t0)
            batch = strategy.collate(train, idx).to(device)
            t1 = clock.now()
            loss = train_step(net, optimizer, batch, strategy.readout, precision, scales[step] if scales else None)
            t2 = clock.now()
        value = loss.item()
        if not math.isfinite(value):
            raise RunFailed("diverged", f"training loss became {value} at step {step}" +
                            (f" on rank {rank}" if group else ""))
        step_times.append(t2 - t0)
        data_times.append(t1 - t0)
        if ready:
            compute_times.append(ready.compute_s())
        losses.append(value)
        real_tokens += batch.real_tokens
        padded_tokens += batch.padded_tokens
        step_tokens.append(batch.real_tokens)
        if every and (step + 1) % every == 0 and step + 1 < len(plan):  # between steps: off the clock
            if rank == 0:
                accuracy, _ = evaluate(evaluated, strategy, held_out, eval_bs, device, precision)
                curve.append([float(sum(step_times)), step + 1, accuracy])
            if group:
                group.barrier()  # the other ranks wait here, not inside the next step's all-reduce
        if progress:
            progress(step + 1, len(plan))
    peak, peak_reserved = peak_memory_bytes(device), peak_memory_reserved_bytes(device)  # training only
    machine = watch.stop()
    train_time = float(sum(step_times))
    data_time = float(sum(data_times))
    ranks = reference = None
    if group:
        ranks = RankTimes.gather(group, step_times, compute_times, data_times, real_tokens, padded_tokens,
                                 peak, checksum, losses)
        if rank != 0:
            return None
        losses = list(ranks.losses)
        train_time, data_time = ranks.train_time_s, ranks.data_time_s
        real_tokens, padded_tokens, peak = ranks.real_tokens, ranks.padded_tokens, ranks.peak_mem_bytes
        # each step: the union's real tokens over its slowest rank's time
        step_tokens = [sum(strategy.real_tokens(train, idx) for idx in step) for step in steps]
        windows = window_rates(step_tokens, list(ranks.step_times))
    else:
        windows = window_rates(step_tokens, step_times)
        if not is_ideal:  # after the peak memory was read: the reference's copy is not the run's memory
            reference = measure_reference(model, initial, strategy, train, plan[:len(plan) // suite.train.epochs],
                                          device, suite.train.lr, suite.train.amp)

    t_eval = clock.now()
    accuracy = accuracy_exact = loss_exact = None
    if not is_ideal:
        accuracy, _ = evaluate(evaluated, strategy, held_out, eval_bs, device, precision)
        accuracy_exact, loss_exact = evaluate(evaluated, exact_strategy(), held_out, eval_bs, device, precision)
        curve.append([train_time, len(plan), accuracy])
    eval_time = clock.now() - t_eval

    steps_per_epoch = len(plan) // suite.train.epochs
    quantiles = np.quantile(ranks.step_times if ranks else step_times, [0.1, 0.5, 0.9])
    return RunRecord(
        **identity(suite, spec, seed, device.type, note_for(spec, suite)), status="ok",
        steps=len(plan), warmup_steps=len(warmup),
        distinct_shapes=len({strategy.shape(train, idx) for step in steps for idx in step}), lstm_kernel=kernel,
        real_tokens=real_tokens, padded_tokens=padded_tokens, pad_fraction=1 - real_tokens / padded_tokens,
        train_time_s=train_time, data_time_s=data_time, data_time_fraction=data_time / train_time,
        samples_per_s=len(train) * suite.train.epochs / train_time, tokens_per_s=real_tokens / train_time,
        step_time_median_s=float(quantiles[1]), step_time_p10_s=float(quantiles[0]),
        step_time_p90_s=float(quantiles[2]),
        peak_mem_bytes=peak, peak_mem_reserved_bytes=peak_reserved,
        baseline_rss_bytes=baseline_rss,
        eval_accuracy=accuracy, eval_accuracy_exact=accuracy_exact, eval_loss_exact=loss_exact,
        curve=curve, target_accuracy=suite.train.target_accuracy or None,
        time_to_target_s=time_to_target(curve, suite.train.target_accuracy),
        final_loss=float(np.mean(losses[-steps_per_epoch:])), init_checksum=checksum,
        threads=torch.get_num_threads(), eval_time_s=eval_time, window_tokens_per_s=windows,
        **({"verified": check.verdict, "verify_loss_rel_error": check.loss_rel_error,
            "verify_grad_rel_error": check.grad_rel_error, "verify_tolerance": check.tolerance,
            "verify_precision": check.precision} if check else {}),
        **(reference.fields(real_tokens / train_time) if reference else {}),
        **(ranks.fields(planned_wait_fraction(strategy, train, steps)) if ranks else {}),
        env={**collect_env(_device_name(device), torch.get_num_threads()), **machine},
    )


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


def measure_reference(model: torch.nn.Module, initial: dict[str, torch.Tensor], strategy: Strategy,
                      data: Dataset, plan: list[np.ndarray], device: torch.device, lr: float,
                      amp: str) -> Reference:
    """What the same batches cost with no padding at all, measured in the run's own process right after its
    training (so the machine's state is the run's): one untimed step of every new shape, then every batch of
    the plan timed. A copy of the model, put back to the seeded weights: the run's trained model is untouched."""
    net = copy.deepcopy(model)
    precision = Precision(device.type, amp)
    batches = [strategy.unpadded(data, idx) for idx in plan]
    seen: set[tuple[int, ...]] = set()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for batch in batches:  # warm-up: every shape once
        if tuple(batch.tokens.shape) not in seen:
            seen.add(tuple(batch.tokens.shape))
            train_step(net, optimizer, batch.to(device), "last", precision)
    net.load_state_dict(initial)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    clock = Clock(device)
    clock.now()
    times, tokens = [], []
    for idx in plan:  # batch preparation inside the clock, as in the run's own timed steps
        t0 = clock.now()
        batch = strategy.unpadded(data, idx).to(device)
        train_step(net, optimizer, batch, "last", precision)
        times.append(clock.now() - t0)
        tokens.append(batch.real_tokens)
    return Reference(sum(tokens) / sum(times), window_rates(tokens, times), len(batches))


CHECKED = 8  # sequences in a run's own equivalence check: the longest of the data and 7 of its batch-mates, so
# that padding, truncation and the readout are exercised while the float64 per-sequence reference stays cheap


def check_batch(plan: list[np.ndarray], lengths: np.ndarray, size: int = CHECKED) -> np.ndarray:
    """The longest sequence and up to size - 1 others from the batch that holds it."""
    longest = int(lengths.argmax())
    batch = next((idx for idx in plan if longest in idx), np.array([longest]))
    return np.array([longest] + [int(i) for i in batch if i != longest][:size - 1])


def time_to_target(curve: list[list[float]], target: float) -> float | None:
    """Training seconds at the first evaluation that reached `target` (MLPerf's score); None if none did."""
    if not target:
        return None
    return next((t for t, _, accuracy in curve if accuracy >= target), None)


def warmup_steps(strategy: Strategy, data: Dataset, steps: Steps, count: int) -> list[int]:
    """The first `count` steps, then every step that brings some rank a batch shape it has not seen: a new
    shape can make a backend re-plan or autotune (cuDNN benchmark, oneDNN primitives), which must not land
    in the clock. The same steps on every rank, so DDP's all-reduces pair up."""
    if not count:
        return []
    chosen = list(range(min(count, len(steps))))
    seen = [{strategy.shape(data, step[r]) for step in steps[:count]} for r in range(len(steps[0]))]
    for s in range(count, len(steps)):
        shapes = [strategy.shape(data, idx) for idx in steps[s]]
        if any(shape not in seen[r] for r, shape in enumerate(shapes)):
            chosen.append(s)
            for r, shape in enumerate(shapes):
                seen[r].add(shape)
    return chosen


class Precision:
    """Autocast (train.amp: bf16 | fp16 | none) and, for fp16, a gradient scaler."""

    DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, device_type: str, amp: str):
        self.device_type, self.amp = device_type, amp
        self.scaler = torch.amp.GradScaler(device_type) if amp == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.DTYPES[self.amp])


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, readout: str,
               precision: Precision, scale: float | None = None) -> torch.Tensor:
    """One optimizer step: the only place the model is trained (warm-up and timed loop alike). With `scale`
    (a DDP rank), the loss is the batch's summed loss times `scale`."""
    with precision.autocast():
        logits = net(batch.tokens, batch.lengths, readout)
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


@contextlib.contextmanager
def out_of_memory_as_row(step: int, shape: tuple[int, int]) -> Iterator[None]:
    """An out-of-memory error becomes an `oom` row naming the batch shape that did not fit."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "out of memory"
        raise RunFailed("oom", f"out of memory at step {step} on a batch of shape {shape}: {first}") from None


def probe_kernel(model: LSTMClassifier, strategy: Strategy, data: Dataset, idx: np.ndarray,
                 device: torch.device, precision: Precision) -> str:
    """The LSTM implementation a batch of this strategy runs (one forward pass, nothing trained)."""
    batch = strategy.collate(data, idx).to(device)
    with KernelProbe() as probe, precision.autocast():
        model(batch.tokens, batch.lengths, strategy.readout)
    return probe.kernel


def _warm_up(model: LSTMClassifier, net: torch.nn.Module, strategy: Strategy, data: Dataset,
             plan: list[np.ndarray], device: torch.device, lr: float, precision: Precision,
             scales: list[float] | None, saved: dict[str, torch.Tensor]) -> None:
    """Untimed steps on the model itself (so compiled graphs and kernel caches are the ones the timed loop
    uses), then its seeded weights (`saved`, a copy taken before) are put back: every strategy still trains
    from the same start."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for i, idx in enumerate(plan):
        with out_of_memory_as_row(-len(plan) + i, strategy.shape(data, idx)):  # negative: a warm-up step
            train_step(net, optimizer, strategy.collate(data, idx).to(device), strategy.readout, precision,
                       scales[i] if scales else None)
    model.load_state_dict(saved)
    Clock(device).now()  # drain the queue before the timed loop


@torch.no_grad()
def evaluate(model: torch.nn.Module, strategy: Strategy, data: Dataset, batch_size: int,
             device: torch.device, precision: Precision | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over `data` through `strategy`'s padding and readout, in the
    precision it trained with (what deploying it gives)."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for batch in strategy.eval_batches(data, batch_size):
        batch = batch.to(device)
        with precision.autocast() if precision else contextlib.nullcontext():
            logits = model(batch.tokens, batch.lengths, strategy.readout).float()
        loss_sum += loss_of(logits, batch.labels, reduction="sum").item()
        correct += correct_of(logits, batch.labels)
    model.train(was_training)
    scored = int(data.lengths.sum()) if data.tagged else len(data)  # tag: every real step, truncated or not
    return correct / scored, loss_sum / scored


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
