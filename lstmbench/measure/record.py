"""Result records: one `RunRecord` per (strategy, seed) run, flat scalars plus `env`."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import re
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..results.row_check import nested_problem, value_problem

SCHEMA_VERSION = 5  # bump when a stored key changes meaning or disappears; readers refuse newer files
# 2: efficiency divides by the run's own unpadded reference (1: by the seed's ideal run); windows, position
# 3: warm-up on batches set aside for it; train_time_s is steady state (first occurrences of shapes at their
#    steady time, their cost in shape_warmup_s); on CUDA, step times from events and no synchronisation per step
# 4: train_mem_bytes; peaks exclude evaluations
# 5: the unpadded reference times a sample of the first epoch's batches (reference_steps of them), not all;
#    eval_accuracy_exact through the fused masked path (was packing); data_checksum, start_method, until_stable

STATUSES = ("ok", "error", "diverged", "oom", "crashed")


@dataclass
class RunRecord:
    suite: str
    suite_hash: str  # hash of the resolved suite: rows with equal hashes share a configuration
    strategy: str
    batching: str
    padding: str
    readout: str
    max_len: int
    computation_note: str  # '' = equals per-sequence processing; else how the computation differs
    device: str
    seed: int
    status: str  # ok | error | diverged | oom | crashed
    error: str = ""
    max_tokens: int = 0  # token_budget only: the padded-token budget of a batch
    epochs: int = 0
    batch_size: int = 0
    steps: int = 0  # optimizer steps, all timed (warm-up ran on a scratch copy of the model)
    warmup_steps: int = 0  # untimed steps on batches set aside for warm-up (another shuffle of the training set)
    warmup_time_s: float | None = None  # their seconds: the run's start-up (first allocations, first kernels)
    shape_warmup_s: float | None = None  # what first occurrences of batch shapes cost over their steady time
    train_time_cold_s: float | None = None  # training time as a first run pays it: + the shapes' first costs
    distinct_shapes: int | None = None  # distinct (batch, time) shapes among the timed steps
    lstm_kernel: str | None = None  # cudnn | miopen | onednn | generic: the LSTM implementation that ran
    # float32 | bfloat16 | float16: the dtype that kernel ran in, seen by the probe (autocast decides it per op:
    # cuDNN's LSTM runs float16 under bf16 autocast); None in rows made before it was recorded
    lstm_dtype: str | None = None
    loss_scaled: bool | None = None  # a GradScaler scaled the loss (fp16, or an fp16 LSTM under bf16)
    real_tokens: int | None = None  # non-padding tokens fed to the model (after truncation)
    padded_tokens: int | None = None  # batch x time summed over steps: every position computed or padded
    pad_fraction: float | None = None
    train_time_s: float | None = None  # steady-state step time: batch preparation + forward + backward + update
    data_time_s: float | None = None  # batch preparation (collate, copy to device) within train_time_s
    data_time_fraction: float | None = None
    data_wait_s: float | None = None  # seconds the loop waited for its batches (with loader workers: not prep)
    loader_workers: int = 0  # train.loader: 0 = batches collated in the training process
    loader_pin_memory: bool = False
    loader_prefetch_factor: int = 2
    samples_per_s: float | None = None
    tokens_per_s: float | None = None  # real tokens per second of train_time_s
    step_time_median_s: float | None = None
    step_time_p10_s: float | None = None
    step_time_p90_s: float | None = None
    peak_mem_bytes: int | None = None  # CUDA peak allocated; CPU: the run process's peak RSS; timed steps only
    train_mem_bytes: int | None = None  # tensor memory of training at its peak (CUDA allocated; CPU counted)
    peak_mem_reserved_bytes: int | None = None  # CUDA: peak held by the caching allocator; null on CPU
    baseline_rss_bytes: int | None = None  # resident memory when the run began, before data and model
    eval_accuracy: float | None = None  # the strategy's own inference path (what deploying it gives)
    eval_accuracy_exact: float | None = None  # the same weights, evaluated exactly per sequence
    eval_loss_exact: float | None = None
    final_loss: float | None = None  # mean training loss over the last epoch
    curve: list = field(default_factory=list)  # [train_time_s, step, eval_accuracy] every eval_every steps
    target_accuracy: float | None = None
    time_to_target_s: float | None = None  # steady-state training time at the first evaluation reaching the target
    time_to_target_cold_s: float | None = None  # the same, with what new shapes cost until then (a first run's)
    time_to_target_with_eval_s: float | None = None  # cold, plus the evaluations until then: MLPerf's clock
    time_to_target_resolution_s: float | None = None  # training seconds between that evaluation and the one before
    tokens_to_target: int | None = None  # real tokens trained until the target was reached: the same for every run
    # of a seed on a CPU, whatever the load
    time_to_target_robust_s: float | None = None  # tokens_to_target / the median window's tokens/s: a time to
    # target that a burst of load over a few windows does not move (time_to_target_s keeps every second)
    reached_target: bool | None = None  # null without a target (and for the ideal); false: capped or out of epochs
    accuracy_by_length: list = field(default_factory=list)  # [low, high, count, accuracy] per held-out length bin
    efficiency: float | None = None  # tokens_per_s / reference_tokens_per_s: the run against its own batches unpadded
    reference_tokens_per_s: float | None = None  # the run's first epoch of batches, each cut into equal unpadded rows
    reference_window_tokens_per_s: list = field(default_factory=list)  # the reference's windows
    reference_steps: int | None = None  # timed steps of the reference: a sample of the first epoch
    window_tokens_per_s: list = field(default_factory=list)  # tokens/s of consecutive windows of the timed steps
    position: int | None = None  # where the run came in its seed's shuffled order of strategies (0 = first)
    verified: str | None = None  # the run's own check on its timed path: equivalent | differs as designed | MISMATCH
    verify_loss_rel_error: float | None = None  # that check's largest relative errors, against the strategy's
    verify_grad_rel_error: float | None = None  # own per-sequence reference (float64)
    verify_tolerance: float | None = None  # fitted to the precision the run trains in
    verify_precision: str | None = None  # float32 | tf32 | bf16 | fp16: the arithmetic the check ran in
    init_checksum: str = ""  # sha256 prefix of the initial weights: equal across strategies of a seed
    data_checksum: str = ""  # sha256 prefix of the seed's train and held-out data as the run loaded it
    start_method: str = ""  # how the run's process began: forkserver | spawn | inline | torchrun
    threads: int = 0
    amp: str = "none"  # autocast precision: bf16 | fp16 | none
    cudnn_benchmark: bool | None = None
    compiled: bool | None = None  # trained through torch.compile
    compile_graphs: int | None = None  # torch.compile: graphs compiled, recompilations for new shapes included
    compile_graph_breaks: int | None = None  # torch.compile: graph breaks (Dynamo leaves the LSTM eager)
    eval_time_s: float | None = None  # the final evaluations (own path and exact); not part of train_time_s
    eval_periodic_time_s: float | None = None  # the evaluations between segments, together; not in train_time_s
    world_size: int = 1  # processes training the run (DDP when > 1); batch_size is per process
    deal: str = ""  # DDP: per_rank (each rank batches its own shard) | balanced (batches dealt by cost)
    rank_step_time_median_s: list = field(default_factory=list)  # DDP: each rank's median step time
    rank_compute_time_s: list = field(default_factory=list)  # DDP: each rank's own forward+backward seconds
    rank_padded_tokens: list = field(default_factory=list)  # DDP: each rank's padded cells (batch x time summed)
    straggler_wait_fraction: float | None = None  # DDP: share of rank step time spent waiting for the slowest
    planned_wait_fraction: float | None = None  # DDP: the same, estimated from the plan's padded cells alone
    until_stable: str = ""  # --until-stable: "stable" on the run after which the strategy's throughput was
    # within the tolerance (no more seeds for it), "limit" on its run at --max-seeds while still outside it
    until_stable_percent: float | None = None  # that tolerance, +-% of the median
    shard: str = ""  # K/N when the run came from `lstmbench run --shard K/N`
    disturbance: str = ""  # disturbance.Disturbance of this row's timed steps: quiet | disturbed | unread | not judged
    disturbed_attempts: list = field(default_factory=list)  # run --rerun-disturbed: each earlier attempt of this
    # run that was measured on a busy machine and run again: {tokens_per_s, run_wait_share, other_cpu_share}
    sweep: dict[str, Any] = field(default_factory=dict)  # a swept suite's point: key path -> value
    config: dict[str, Any] = field(default_factory=dict)  # the resolved suite, for the report and reruns
    env: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for `lstmbench run`'s log of a measured run."""
        at = " [" + ", ".join(f"{k}={v}" for k, v in self.sweep.items()) + "]" if self.sweep else ""
        text = f"{self.strategy} seed {self.seed}{at}: {self.tokens_per_s:,.0f} tokens/s"
        if self.efficiency is not None:
            text += f" ({self.efficiency:.0%} of unpadded)"
        if self.eval_accuracy is not None:
            text += f", accuracy {self.eval_accuracy:.3f} (exact {self.eval_accuracy_exact:.3f})"
        if self.time_to_target_s is not None:
            text += f", target at {self.time_to_target_s:.2f} s"
        elif self.reached_target is False:
            text += ", target not reached"
        if self.straggler_wait_fraction is not None:
            text += f", {self.world_size} ranks waiting {self.straggler_wait_fraction:.0%} for the slowest"
        return text + f", train {self.train_time_s:.2f} s"


REQUIRED_KEYS = tuple(f.name for f in dataclasses.fields(RunRecord))
ROW_KEYS = ("schema_version", "suite", "strategy", "seed", "device", "status")  # what every reader groups by
SUITE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")  # as a suite's `name:` (it names a folder)
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,)}
_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "list": "a list",
          "dict": "an object", "None": "null"}


def row_problem(row: Any) -> str | None:
    """What is wrong with a stored row, read back from JSON, as a sentence; None for a row every reader can use.

    Checked: it is an object; the keys every reader groups by are there with their types; every other field of
    RunRecord has its declared type (or null); an ok row's numbers are finite and its tokens/s positive; then
    each number's domain, the names readers build on, and every nested field (row_check). A row of a newer
    schema is not judged here: the reader refuses the whole file (see storage)."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not a result row (an object)"
    if "schema_version" not in row or "strategy" not in row:
        return "not an lstmbench result row (no schema_version or strategy)"
    for key in ROW_KEYS:
        if row.get(key) is None:
            return f"{key} is missing"
    hints = _field_types()
    for key, value in row.items():
        allowed = hints.get(key)
        if allowed is None or (value is None and "None" in allowed):
            continue
        types = tuple(t for name in allowed for t in _TYPES.get(name, ()))
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            return f"{key} is {_quote(value)}, not {' or '.join(_NAMES.get(a, a) for a in allowed)}"
        if row["status"] == "ok" and not all(math.isfinite(v) for v in _floats(value)):
            return f"{key} is {_quote(value)} in an ok row (a measured number must be finite)"
    if row["schema_version"] < 1:
        return f"schema_version is {row['schema_version']}, not a version (1 or more)"
    if not SUITE_NAME.fullmatch(row["suite"]):
        return f"suite is {_quote(row['suite'])}, not a suite name (letters, digits, '_', '.', '-')"
    if row["status"] not in STATUSES:
        return f"status is {_quote(row['status'])}, not one of {', '.join(STATUSES)}"
    if row["status"] == "ok" and not (isinstance(row.get("tokens_per_s"), (int, float)) and row["tokens_per_s"] > 0):
        return f"an ok row with tokens_per_s {_quote(row.get('tokens_per_s'))} (a measured run has a positive one)"
    return value_problem(row) or nested_problem(row)


def complete_row(row: dict[str, Any]) -> dict[str, Any]:
    """A valid row with the fields it lacks (an older schema's, or a hand-made row's) as their defaults,
    else empty ('' for text, 0 for a count), so that no reader meets a missing key."""
    empty = {"str": "", "int": 0}
    for f in dataclasses.fields(RunRecord):
        if f.name not in row:
            row[f.name] = (f.default if f.default is not dataclasses.MISSING
                           else f.default_factory() if f.default_factory is not dataclasses.MISSING
                           else empty.get(_field_types()[f.name][0]))
    return row


@functools.lru_cache(maxsize=1)
def _field_types() -> dict[str, tuple[str, ...]]:
    """field -> the JSON-level type names it may hold, from RunRecord's annotations ('float | None' ...)."""
    names = {}
    for f in dataclasses.fields(RunRecord):
        text = str(f.type)
        names[f.name] = tuple(part.strip().split("[")[0] for part in text.split("|"))
    return names


def _floats(value: Any) -> list[float]:
    """The floats of a number or a flat list of numbers (the windows' tokens/s)."""
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, float)]


def _quote(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def identity(suite: Any, spec: Any, seed: int, device: str, note: str) -> dict[str, Any]:
    """The fields that say which run a row is and how it was configured: the same in a measured row and in
    the row of a run that failed before measuring anything."""
    return dict(suite=suite.name, suite_hash=suite.hash, strategy=spec.name, batching=spec.batching,
                padding=spec.padding, readout=spec.readout, max_len=spec.max_len, max_tokens=spec.max_tokens,
                computation_note=note, device=device, seed=seed, epochs=suite.train.epochs,
                batch_size=suite.train.batch_size, amp=suite.train.amp,
                cudnn_benchmark=suite.train.cudnn_benchmark, compiled=suite.train.compile, sweep=suite.point,
                world_size=suite.launch.nproc, deal=spec.deal if suite.launch.nproc > 1 else "",
                config=suite.to_dict())


def variant_of(row: dict[str, Any]) -> list[str]:
    """What sets apart rows of one suite, strategy and device made differently on purpose: the sweep point
    and the DDP world size, e.g. ['launch.nproc=2', '2 ranks']. Such rows are never compared or pooled."""
    point = row.get("sweep") if isinstance(row.get("sweep"), dict) else {}
    parts = [f"{k}={v}" for k, v in point.items()]
    world = row.get("world_size")
    if isinstance(world, (int, float)) and world == world and world > 1:  # world == world: not NaN
        parts.append(f"{int(world)} ranks")
    return parts


def hardware(env: Any) -> str:
    """The hardware a row was measured on: CPU model and core count, plus the GPU on CUDA."""
    if not isinstance(env, dict) or not (env.get("cpu") or env.get("device_name")):
        return "unknown machine"
    gpu = env.get("device_name")
    cpu = env.get("cpu") or "?"
    cpu += f" ({env['cpu_id']})" if env.get("cpu_id") else ""
    return f"{cpu} x{env.get('cpu_count') or '?'}" + (f", {gpu}" if gpu and gpu != "cpu" else "")


def software(env: Any) -> str:
    """The numerical stack: torch, and on CUDA its CUDA and cuDNN versions ('torch 2.13.0+cpu')."""
    if not isinstance(env, dict):
        return "torch ?"
    text = f"torch {env.get('torch') or '?'}"
    if env.get("cuda"):
        text += f", CUDA {env['cuda']}"
    if env.get("cudnn"):
        text += f", cuDNN {env['cudnn']}"
    return text


def code(env: Any) -> str:
    """The code that measured a row: lstmbench's version and commit ('-dirty' with uncommitted changes)."""
    if not isinstance(env, dict):
        return "lstmbench ?"
    commit = env.get("git_commit")
    at = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "") if commit else "no commit"
    return f"lstmbench {env.get('lstmbench') or '?'} at {at}"


def collect_env(device_name: str, threads: int) -> dict[str, Any]:
    """Where and with what a row was measured (pyperf-style metadata)."""
    import numpy
    import torch

    from ..version import __version__

    return {
        "lstmbench": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device_name": device_name,
        "cpu": _cpu_model(),
        "cpu_id": _cpu_id(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        # OpenMP settings that change how torch's threads wait for each other (and so how a busy machine hurts)
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_id() -> str | None:
    """What 'model name' hides: the family and model, and the widest vector ISA ('family 25 model 1, avx2').
    Two 'AMD EPYC' VMs can be a Zen 3 with AVX2 and a Zen 4 with AVX-512 and bf16: twice apart in oneDNN."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines()[:40] if ":" in line)
    except OSError:
        return None
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    isa = next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx") if f in flags), "sse")
    return f"family {info.get('cpu family', '?')} model {info.get('model', '?')}, {isa}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Overhead:
    """What `lstmbench run` cost beyond what its rows measured (starting runs, data, warm-up, checks, the
    unpadded reference, memory counting): the wall time against the rows' training and evaluation time."""
    wall_s: float
    train_s: float  # train_time_cold_s summed: the timed steps, with the first shapes at what they cost
    eval_s: float  # eval_time_s + eval_periodic_time_s summed

    @property
    def ratio(self) -> float:
        return self.wall_s / (self.train_s + self.eval_s)

    def sentence(self) -> str:
        busy = self.train_s + self.eval_s
        return (f"harness overhead: {1 - busy / self.wall_s:.0%} of wall time (wall {self.wall_s:,.1f} s; training "
                f"{self.train_s:,.1f} s and evaluation {self.eval_s:,.1f} s in the rows: {self.ratio:.2f}x)")


def harness_overhead(rows: list[dict[str, Any]], wall_s: float) -> Overhead | None:
    """None when no run succeeded (nothing was measured to compare the wall time with)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    train = sum(_number(r.get("train_time_cold_s")) for r in ok)
    evals = sum(_number(r.get("eval_time_s")) + _number(r.get("eval_periodic_time_s")) for r in ok)
    return Overhead(wall_s, train, evals) if ok and train + evals > 0 and wall_s > 0 else None


def _number(value: Any) -> float:
    """A row's seconds, 0 for a missing or NaN value (pandas writes NaN for null)."""
    return float(value) if isinstance(value, (int, float)) and value == value else 0.0
