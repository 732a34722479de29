"""Result records: one `RunRecord` per (strategy, seed) run, flat scalars plus `env`."""
from __future__ import annotations

import dataclasses
import os
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

SCHEMA_VERSION = 5  # bump when a stored key changes meaning or disappears; readers refuse newer files
# 2: efficiency divides by the run's own unpadded reference (1: by the seed's ideal run); windows, position
# 3: warm-up on batches set aside for it; train_time_s is steady state (first occurrences of shapes at their
#    steady time, their cost in shape_warmup_s); on CUDA, step times from events and no synchronisation per step
# 4: train_mem_bytes; peaks exclude evaluations
# 5: the unpadded reference times a sample of the first epoch's batches (reference_steps of them), not all;
#    eval_accuracy_exact through the fused masked path (was packing); data_checksum, start_method, until_stable

Status = Literal["ok", "error", "diverged", "oom", "crashed"]
STATUSES = get_args(Status)


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
    status: Status
    error: str = ""
    max_tokens: int = 0  # token_budget only: the padded-token budget of a batch
    epochs: int = 0
    batch_size: int = 0
    steps: int = 0  # optimizer steps, all timed (the warm-up's are apart: warmup_steps)
    warmup_steps: int = 0  # untimed steps on batches set aside for warm-up (another shuffle of the training set)
    warmup_time_s: float | None = None  # their seconds: the run's start-up (first allocations, first kernels)
    shape_warmup_s: float | None = None  # what first occurrences of batch shapes cost over their steady time
    train_time_cold_s: float | None = None  # training time as a first run pays it: + the shapes' first costs
    distinct_shapes: int | None = None  # distinct (batch, time) shapes among the timed steps
    # cudnn | miopen | onednn | generic: the LSTM implementation that ran; a Keras strategy's: keras-cudnn |
    # keras-while-loop (TensorFlow's tf.while_loop) | keras-python-loop (the torch backend's loop over steps) |
    # keras-scan (JAX's lax.scan)
    lstm_kernel: str | None = None
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
    # the training set's lengths: [shortest, longest, count] per bin, and [median, p90, longest]
    train_length_histogram: list = field(default_factory=list)
    train_length_percentiles: list = field(default_factory=list)
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
    framework: str = "torch"  # what trained the batches: torch (lstmbench's loop) | keras (Keras's recipe)
    keras_backend: str = ""  # a Keras strategy's backend: tensorflow | torch | jax
    model_factory: str = ""  # the suite's own model (model.factory, e.g. models.py:build); '' = lstmbench's
    model_source_hash: str = ""  # sha256 prefix of the factory's source file, as the run imported it
    model_params: int | None = None  # parameters of the model trained
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


def identity(suite: Any, spec: Any, seed: int, device: str, note: str) -> dict[str, Any]:
    """The fields that say which run a row is and how it was configured: the same in a measured row and in
    the row of a run that failed before measuring anything."""
    return dict(suite=suite.name, suite_hash=suite.hash, strategy=spec.name, batching=spec.batching,
                padding=spec.padding, readout=spec.readout, max_len=spec.max_len, max_tokens=spec.max_tokens,
                computation_note=note, device=device, seed=seed, epochs=suite.train.epochs,
                batch_size=suite.train.batch_size, amp=suite.train.amp,
                cudnn_benchmark=suite.train.cudnn_benchmark, compiled=suite.train.compile, sweep=suite.point,
                world_size=suite.launch.nproc, deal=spec.deal if suite.launch.nproc > 1 else "",
                model_factory=suite.model.factory, framework=spec.framework, keras_backend=spec.backend,
                config=suite.to_dict())


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
