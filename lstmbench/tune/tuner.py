"""`lengths --tune`: a batching strategy chosen for this machine and this data, by a cost model calibrated here.

1. probe: train steps of the suite's own model on batches of its own data, over a grid of batch shapes
   (rows x padded length) near the shapes the candidates make, each readout kind they use; untimed steps, then
   timed ones (batch preparation included, as the harness times a step), within a time budget;
2. fit: costmodel's step time and peak memory per readout kind;
3. search: predict every candidate's epoch (its real plan: Strategy.plan, shape, real_tokens), drop those whose
   largest batch would exceed the memory cap, rank by predicted real tokens per second;
4. propose the best as a suite entry; `check` trains it and the best preset as `lstmbench run` does.
Nothing here prints or stores a row.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch

from ..data import Dataset, make_data
from ..measure import (
    Clock,
    MachineWatch,
    Precision,
    StepTimer,
    busy_warning,
    model_for,
    probe_kernel,
    reset_peak_memory,
    step_memory_bytes,
    train_step,
)
from ..strategies import Strategy, note_for
from ..suite import PRESETS, StrategySpec, Suite, parse_strategy, suite_from_dict
from .costmodel import (
    PACKED,
    PADDED,
    READOUT_OF,
    Candidate,
    CostModel,
    Prediction,
    Probe,
    Proposal,
    TuneError,
    epoch_shapes,
    examples,
    fit_model,
    kind_of,
    probe_grid,
    propose,
    search,
)

BUDGET_S = 60.0  # default seconds of probing: on a 2-core CPU, the packing suite's 69 shapes about three times
WARM_STEPS = 2  # untimed steps of a shape first: its kernel set-up (oneDNN primitives, cuDNN autotuning)
TIMED_STEPS = 3  # then at least 3 timed steps, their median: one slow step (a page fault) does not count
MAX_TIMED_STEPS = 9  # and up to 9 while they take under MIN_TIMED_S: short steps are noisier
MIN_TIMED_S = 0.05  # (50 ms: a few-ms step's median over 3 is at the clock's and the scheduler's mercy)
MIN_PROBES = 5  # a kind's first 5 probes run even past the budget: 4 coefficients (packed) need 4, one checks them
# the first probes run past the budget, but never past this many times it (or OVERRUN_FLOOR_S): on a busy machine
# they ran 50x slower, and a 0.3 s budget took 158 s
OVERRUN = 10
OVERRUN_FLOOR_S = 30.0
MAX_PASSES = 3  # with budget left once the grid is done, it is timed again (each shape's noise is +-15% here)
MEMORY_PROBES = 4  # memory is measured on a kind's first 4 probes, cheap shapes by the grid's order (TensorMemory
# replays a step op by op: slow on long packed loops), and extrapolates: it is linear in cells to ~1%
SIZE_FACTORS = (0.5, 1, 2)  # candidate batch sizes: within 2x of the suite's, as a larger batch changes training
MEGABATCHES = (0, 50, 100)  # bucket: sort the whole data (0) or within 50 / 100 batches (Hugging Face's 50)
PAD_MULTIPLES = (0, 8)  # 8: what tensor cores want; on a CPU it mostly means fewer distinct shapes
EDGE_COUNTS = (3, 4, 5, 6)  # boundaries: that many edges at evenly spaced quantiles of the lengths
BUDGET_LENGTHS = (50, 75, 90)  # token_budget: max_tokens = batch size x these length percentiles x BUDGET_SCALES
BUDGET_SCALES = (1, 1.5, 2)
DRIFT_PROBES = 5  # --check re-times 5 probed shapes around its runs (about a second): how the machine's speed moved
READOUTS = ("mask", "pack")  # exact readouts only: truncation and naive's last step change the computation


@dataclass(frozen=True)
class Tuning:
    suite: str
    seed: int
    device: str
    threads: int
    budget_s: float
    probed: ProbeRun
    model: CostModel
    ranked: list[Prediction]  # every candidate under the cap, fastest first
    over_cap: list[Prediction]  # those whose largest batch would exceed the cap
    memory_cap: float | None  # bytes
    proposal: Proposal
    busy: str = ""  # machine.busy_warning over the probing: other processes' CPU share makes the timings unreliable
    world: int = 1  # DDP ranks (launch.nproc): a step's time is its slowest rank's; the all-reduce is not modelled


# ----------------------------------------------------------------------------- candidates
def candidates(suite: Suite, lengths: np.ndarray) -> list[Candidate]:
    """The suite's exact strategies, the exact presets not among them, then the searched compositions."""
    bs, world = suite.train.batch_size, suite.launch.nproc
    exact = [s for s in suite.strategies if not note_for(s, suite)]
    out = [Candidate(s, bs, "suite") for s in exact]
    seen = {_key(s) for s in exact}
    for name in PRESETS:
        spec = parse_strategy(name)
        if not note_for(spec, suite) and _key(spec) not in seen:
            seen.add(_key(spec))
            out.append(Candidate(spec, bs, "preset"))
    sizes = sorted({max(1, round(bs * f)) for f in SIZE_FACTORS})
    deals = ("per_rank", "balanced") if world > 1 else ("per_rank",)
    shapes: list[tuple[str, int, dict]] = []  # (label, batch size, options)
    for size in sizes:
        shapes += [(f"b{size}-mb{m}", size, {"batching": "bucket", "megabatch": m}) for m in MEGABATCHES
                   if m * size < len(lengths) / world]  # a megabatch as large as a rank's epoch sorts it all, as 0
        for k in EDGE_COUNTS:
            edges = sorted({int(round(q)) for q in np.percentile(lengths, np.linspace(0, 100, k + 2)[1:-1])} - {0})
            if edges:
                shapes.append((f"b{size}-e{'.'.join(map(str, edges))}", size,
                               {"batching": "boundaries", "boundaries": tuple(edges)}))
    budgets = sorted({int(round(bs * q * s)) for q in np.percentile(lengths, BUDGET_LENGTHS) for s in BUDGET_SCALES})
    shapes += [(f"t{m}", bs, {"batching": "token_budget", "max_tokens": m}) for m in budgets]
    made = {(k, bs) for k in seen}
    for label, size, options in shapes:
        for readout in READOUTS:
            for pm in PAD_MULTIPLES:
                for deal in deals:
                    name = f"{options['batching']}-{readout}-{label}" + (f"-p{pm}" if pm else "") + (
                        f"-{deal}" if world > 1 else "")
                    spec = StrategySpec(name=name, padding="batch", readout=readout, pad_multiple=pm, deal=deal,
                                        **options)
                    if (_key(spec), size) not in made:
                        made.add((_key(spec), size))
                        out.append(Candidate(spec, size, "search"))
    return out


def _key(spec: StrategySpec) -> tuple:
    return dataclasses.astuple(replace(spec, name=""))


# ----------------------------------------------------------------------------- probing
BUSY_PROBE = 0.25  # a probe during which other processes took over a quarter of the CPU is timed again (once):
# on a 2-core machine one busy neighbour slows oneDNN's threads by 10-100x, and /proc's jiffies are coarse


@dataclass(frozen=True)
class ProbeRun:
    probes: list[Probe]
    kernels: dict[str, str]  # kind -> the LSTM implementation its batches ran (probes.KernelProbe)
    seconds: float
    busy: int  # probes timed while other processes used the CPU, timed again or left out
    passes: int  # times the grid was begun (a pass may end at the budget)
    stopped: bool = False  # stopped at the overrun limit, some kind perhaps short of MIN_PROBES


def probe(suite: Suite, data: Dataset, seed: int, grid: list[tuple[str, int, int, str]], budget_s: float,
          device: torch.device, on_probe: Callable[[Probe], None] | None = None, memory: bool = True) -> ProbeRun:
    """Time the grid's shapes on the suite's model (built as train.run_one builds it) until the budget is spent
    (a kind's first MIN_PROBES whatever the budget); `memory`: measure the first MEMORY_PROBES' peak too."""
    model = model_for(suite.model, data, seed, suite.origin).to(device)
    precision = Precision(device.type, suite.train.amp)
    optimizer = torch.optim.Adam(model.parameters(), lr=suite.train.lr)
    clock, rng = Clock(device), np.random.default_rng([seed, 0x7E57])
    probes: list[Probe] = []
    kernels: dict[str, str] = {}
    queue, retried, busy, passes = list(grid), set(), 0, 1
    began, limit = clock.now(), max(OVERRUN * budget_s, OVERRUN_FLOOR_S)
    while queue:
        if clock.now() - began > limit:
            return ProbeRun(probes, kernels, clock.now() - began, busy, passes, stopped=True)
        item = queue.pop(0)
        if not queue and passes < MAX_PASSES and clock.now() - began < budget_s:
            passes += 1  # budget left after the whole grid: time it again, backwards (noise averages out)
            queue = [g for g in grid[::-1] if g != item]
        kind, rows, width, mix = item
        done = [p for p in probes if p.kind == kind]
        spent = clock.now() - began
        if len(done) >= MIN_PROBES:
            if spent >= budget_s:
                break
            try:
                guess = fit_model(done).steps[kind].seconds(rows, width, rows * width)
            except TuneError:
                guess = 0.0
            if spent + guess * (WARM_STEPS + TIMED_STEPS) > budget_s:
                continue  # a cheaper shape may still fit in what is left
        idx = examples(data.lengths, rows, width, mix, rng, distinct=kind == PACKED)
        strategy = Strategy(StrategySpec(name="probe", padding="batch", readout=READOUT_OF[kind]))
        if kind not in kernels:
            kernels[kind], lstm_dtype = probe_kernel(model, strategy, data, idx, device, precision)
            if precision.lstm_dtype != lstm_dtype:  # a loss scaler where the LSTM runs fp16, as run_one has
                precision = Precision(device.type, suite.train.amp, lstm_dtype)

        def steps(n: int) -> list[float]:
            """n steps timed as run_one times them: CUDA events, no synchronisation between the steps."""
            timer = StepTimer(device)
            with timer.segment():
                for _ in range(n):
                    t0 = timer.mark()
                    train_step(model, optimizer, strategy.collate(data, idx).to(device), strategy.readout,
                               precision)
                    timer.step(t0, timer.mark())
            return timer.step_times()

        steps(WARM_STEPS)
        watch = MachineWatch.start("cpu")
        times = steps(TIMED_STEPS)
        while len(times) < MAX_TIMED_STEPS and sum(times) < MIN_TIMED_S:
            times += steps(min(len(times), MAX_TIMED_STEPS - len(times)))  # doubling: few synchronisations
        if (watch.stop().get("other_cpu_share") or 0) > BUSY_PROBE:
            busy += 1
            if item not in retried:
                retried.add(item)
                queue.append(item)
            continue
        peak = _memory(model, optimizer, strategy, data, idx, precision, device) if (
            memory and len(done) < MEMORY_PROBES) else None
        probes.append(Probe(kind, rows, int(data.lengths[idx].max()), int(data.lengths[idx].sum()),
                            float(np.median(times)), peak, mix))
        if on_probe:
            on_probe(probes[-1])
    return ProbeRun(probes, kernels, clock.now() - began, busy, passes)


def _memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: Strategy, data: Dataset,
            idx: np.ndarray, precision: Precision, device: torch.device) -> int:
    """Peak bytes of one step: CUDA's allocator peak; on a CPU, the harness's own count (train.step_memory_bytes:
    the tensors alive at the step's peak, weights and optimizer state included)."""
    if device.type != "cuda":
        return step_memory_bytes(model, optimizer, strategy, data, idx, precision)
    reset_peak_memory(device)
    train_step(model, optimizer, strategy.collate(data, idx).to(device), strategy.readout, precision)
    return int(torch.cuda.max_memory_allocated(device))


def check_options(budget_s: float, memory_cap_mib: float | None) -> None:
    """TuneError for a budget or a cap that is not a positive number."""
    if not math.isfinite(budget_s) or budget_s <= 0:
        raise TuneError(f"--budget-s must be a positive number of seconds, got {budget_s:g}")
    if memory_cap_mib is not None and (not math.isfinite(memory_cap_mib) or memory_cap_mib <= 0):
        raise TuneError(f"--memory-cap must be a positive number of MiB, got {memory_cap_mib:g}")


def memory_cap_bytes(cap_mib: float | None, device: torch.device) -> float | None:
    """--memory-cap in bytes; by default none on a CPU (it would swap, not fail), the free memory on CUDA."""
    if cap_mib is not None:
        return cap_mib * 2**20
    return float(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else None


@contextlib.contextmanager
def run_threads(suite: Suite, device: torch.device) -> Iterator[int]:
    """torch's threads as a run has them: the suite's `threads`, or under DDP on a CPU a rank's equal share of the
    cores (worker._torchrun); put back after. Yields the count."""
    before = torch.get_num_threads()
    world = suite.launch.nproc
    share = suite.threads or (max(1, (os.cpu_count() or 1) // world) if world > 1 and device.type == "cpu" else 0)
    try:
        if share:
            torch.set_num_threads(share)
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def tune(suite: Suite, budget_s: float = BUDGET_S, memory_cap_mib: float | None = None, seed: int | None = None,
         on_probe: Callable[[Probe], None] | None = None) -> Tuning:
    """Probe, fit, search and propose for the suite's data (its first seed's, or `seed`'s) on its device."""
    from ..measure import resolve_device

    check_options(budget_s, memory_cap_mib)
    device = resolve_device(suite.device)
    cap = memory_cap_bytes(memory_cap_mib, device)
    seed = suite.seeds[0] if seed is None else seed
    data = make_data(suite.data, seed, suite.origin).train
    world = suite.launch.nproc
    cands = candidates(suite, data.lengths)
    shapes: dict[str, list[tuple[int, int]]] = {}  # the (rows, steps) each kind of step runs
    for c in cands:
        for step in epoch_shapes(c, data, seed, world):
            for s in step:
                kind = PADDED if s.uniform else kind_of(c.spec.readout)
                shapes.setdefault(kind, []).append((s.rows, s.width if kind == PADDED else s.longest))
    torch.backends.cudnn.benchmark = suite.train.cudnn_benchmark
    watch = MachineWatch.start(device)  # other processes' share of the CPU while probing: timings to distrust
    with run_threads(suite, device) as used:
        run = probe(suite, data, seed, probe_grid(shapes, data.lengths, MIN_PROBES), budget_s, device, on_probe)
    busy = busy_warning(watch.stop())
    unprobed = sorted(set(shapes) - {p.kind for p in run.probes})
    short = sorted(k for k in shapes if sum(p.kind == k for p in run.probes) < MIN_PROBES)
    if run.stopped and short:
        raise TuneError(f"probing stopped after {run.seconds:.0f} s, over {OVERRUN} times the --budget-s of "
                        f"{budget_s:g} s, with too few {' and '.join(short)} probes to fit ({run.busy} timed while "
                        "other processes used the CPU); run it again on a quieter machine")
    if unprobed:  # every probe of a kind was timed while other processes used the CPU, twice: left out
        raise TuneError(f"no {' or '.join(unprobed)} step could be timed: other processes used the CPU during "
                        f"every probe ({run.busy} disturbed); run it again on a quieter machine")
    measure = "CUDA allocator peak" if device.type == "cuda" else "TensorMemory (the harness's train MiB)"
    model = fit_model(run.probes, measure)
    ranked, over = search(cands, data, model, seed, world, cap, suite.train.batch_size)
    proposal = propose(ranked, over, cap, suite.train.batch_size)
    return Tuning(suite.name, seed, device.type, used, budget_s, run, model, ranked, over, cap, proposal, busy, world)


# ----------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class Checked:
    strategy: str
    predicted: float  # tokens/s
    measured: float | None  # None: the run failed (`status` says how)
    status: str
    error: str = ""
    busy: str = ""  # machine.busy_warning of the run

    @property
    def error_percent(self) -> float | None:
        return None if self.measured is None else 100 * (self.predicted - self.measured) / self.measured


def check_suite(suite: Suite, prediction: Prediction, seed: int, name: str) -> Suite:
    """The suite with only this strategy (named `name`), its batch size, one seed and no ideal."""
    raw = suite.to_dict()
    raw.pop("sweep", None)
    spec = json.loads(json.dumps(dataclasses.asdict(replace(prediction.candidate.spec, name=name))))
    raw.update(strategies=[spec], seeds=[seed], ideal=False)
    raw["train"]["batch_size"] = prediction.candidate.batch_size
    return suite_from_dict(raw, suite.origin)


@dataclass(frozen=True)
class CheckRun:
    checked: list[Checked]
    # the machine's speed before and after the runs against while probing (>1: faster now), from DRIFT_PROBES
    # probed shapes timed again: a prediction is off by at least the drift between probing and training
    drift: tuple[float, float] | None


def check(suite: Suite, tuning: Tuning) -> CheckRun:
    """Train the proposal and the best preset (once, if they are the same) as `lstmbench run` does (each run in a
    process of its own, runner.run_suite), one seed, and compare their measured tokens/s with the predictions.
    No row is stored."""
    from ..run import run_suite

    p = tuning.proposal
    preset = (p.preset.candidate.spec.name, p.preset)
    pairs = [("tuned", p.best), preset] if p.preset is not p.best else [preset]  # the same strategy: once
    before = drift(suite, tuning)
    out = []
    for name, prediction in pairs:
        record = list(run_suite(check_suite(suite, prediction, tuning.seed, name)))[0]
        ok = record.status == "ok"
        out.append(Checked(name, prediction.tokens_per_s, record.tokens_per_s if ok else None, record.status,
                           "" if ok else record.error, busy_warning(record.env) if ok else ""))
    after = drift(suite, tuning)
    return CheckRun(out, (before, after) if before and after else None)


def drift(suite: Suite, tuning: Tuning) -> float | None:
    """The machine's speed now over its speed while probing: the DRIFT_PROBES slowest shapes probed with padded
    batches of near lengths (the same examples; longer steps, steadier times) timed again, against the median of
    their probes; the median ratio."""
    from ..measure import resolve_device

    probed: dict[tuple[int, int], list[float]] = {}
    for p in tuning.probed.probes:
        if p.kind == PADDED and p.mix == "near":
            probed.setdefault((p.rows, p.width), []).append(p.seconds)
    shapes = sorted(probed, key=lambda k: -float(np.median(probed[k])))[:DRIFT_PROBES]
    if not shapes:
        return None
    data, device = make_data(suite.data, tuning.seed, suite.origin).train, resolve_device(suite.device)
    with run_threads(suite, device):
        again = probe(suite, data, tuning.seed, [(PADDED, rows, width, "near") for rows, width in shapes], 0.0,
                      device, memory=False).probes
    ratios = [float(np.median(probed[(p.rows, p.width)])) / p.seconds for p in again if (p.rows, p.width) in probed]
    return float(np.median(ratios)) if ratios else None
