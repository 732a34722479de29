"""Stage 5b, distributed runs: the process group, DistributedDataParallel, and what each rank measures.

A run of `launch.nproc` > 1 is a DDP job started by torchrun (`python -m torch.distributed.run`), whose
workers run `python -m lstmbench.run.ddp_worker JOB`: each joins the process group torchrun describes in its
environment, trains through `train.run_one` with the `Group` made here, and rank 0 writes the record. This
module sits below `train` (which takes a Group); what launches ranks and calls `train` sits above it
(`worker`, `ddp_worker`). Under a
torchrun the user started (`torchrun ... -m lstmbench run SUITE`, e.g. across nodes), `lstmbench run` joins
that group instead and runs every planned run in it.

Straggler time is measured, not estimated: a DDP communication hook stamps the moment a rank's last
gradient bucket is ready (its own forward and backward are done); the rest of its step is the all-reduce,
which cannot finish before the slowest rank's buckets are ready too. After training, the ranks exchange
their per-step compute times once: at each step a rank waited `slowest rank's compute - its own`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from ..errors import LstmbenchError

TIMEOUT = timedelta(minutes=30)  # torch's default for gloo; a rank evaluating keeps the others at a barrier


def under_torchrun() -> bool:
    """Started by torchrun (or another launcher that sets torch.distributed's environment)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def torchrun_world() -> int:
    """The world size of the torchrun job this process is a rank of; 0 when not under torchrun."""
    return int(os.environ["WORLD_SIZE"]) if under_torchrun() else 0


@dataclass(frozen=True)
class Group:
    """This process's place in the DDP job."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank)."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


def join_group(backend: str, device_type: str) -> Group:
    """Join the process group described by torchrun's environment (idempotent)."""
    if not under_torchrun():
        raise LstmbenchError("not started by torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT "
                             "must be set")
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend, timeout=TIMEOUT)
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))


def leave_group() -> None:
    """Destroy the process group before exit: left to the interpreter's exit, gloo's threads can abort."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, group: Group | None) -> torch.device:
    """One GPU per local rank; every rank of a CPU job shares the CPU."""
    if group and device.type == "cuda":
        if group.local_rank >= torch.cuda.device_count():
            raise LstmbenchError(f"local rank {group.local_rank} has no GPU of its own: torch sees "
                                 f"{torch.cuda.device_count()} on this node")
        return torch.device("cuda", group.local_rank)
    return device


class ReadyProbe:
    """Stamps when this rank's last gradient bucket is ready: the end of its own compute in a step.

    On CUDA the stamp is an event recorded on the current stream (read after the step's synchronise);
    on CPU it is perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.start_event: Any = None
        self.ready_event: Any = None
        self.t0 = self.ready = 0.0

    def start(self, t0: float) -> None:
        self.t0 = self.ready = t0
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()

    def hook(self, state, bucket):  # type: ignore[no-untyped-def]  # DDP checks real annotations; none is safe
        if self.cuda:
            self.ready_event = torch.cuda.Event(enable_timing=True)
            self.ready_event.record()
        else:
            self.ready = time.perf_counter()
        return allreduce_hook(state, bucket)  # DDP's own averaging all-reduce

    def compute_s(self) -> float:
        """Seconds from the step's start to the last bucket ready (after the step's synchronise)."""
        if self.cuda and self.ready_event is not None:
            return self.start_event.elapsed_time(self.ready_event) / 1000
        return self.ready - self.t0


def wrap(net: torch.nn.Module, device: torch.device) -> tuple[DistributedDataParallel, ReadyProbe]:
    """DDP around the (possibly compiled) model, with the ready-stamping all-reduce hook."""
    ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(net, device_ids=ids)
    probe = ReadyProbe(device)
    ddp.register_comm_hook(None, probe.hook)
    return ddp, probe


def straggler_wait_fraction(step_times: np.ndarray, compute: np.ndarray) -> float:
    """[ranks, steps] arrays: the share of all ranks' step time spent waiting for the slowest rank's compute."""
    wait = compute.max(axis=0, keepdims=True) - compute
    return float(wait.sum() / step_times.sum())


@dataclass(frozen=True)
class RankTimes:
    """What the ranks measured, exchanged once after training (no collective inside the timed loop)."""

    step_times_by_rank: np.ndarray  # [ranks, steps] seconds
    compute_by_rank: np.ndarray  # [ranks, steps] seconds to the rank's last gradient bucket ready
    data_time_by_rank: np.ndarray  # [ranks] seconds of batch preparation
    real_tokens: int  # summed over ranks
    padded_tokens: int
    padded_by_rank: list[int]  # each rank's padded cells: its share of the work
    peak_mem_bytes: int  # the largest rank's
    train_mem_bytes: int  # the largest rank's
    losses: np.ndarray  # [steps] the loss of the whole step: the mean over the union of the ranks' batches

    @classmethod
    def gather(cls, group: Group, step_times: list[float], compute: list[float], data_times: list[float],
               real_tokens: int, padded_tokens: int, memory: tuple[int, int], checksum: str,
               losses: list[float]) -> "RankTimes":
        """`memory`: the rank's (peak, training tensor) bytes."""
        rows = group.gather((step_times, compute, sum(data_times), real_tokens, padded_tokens, memory, checksum,
                             losses))
        checksums = {row[6] for row in rows}
        if len(checksums) != 1:  # every rank built the model from the same seed; DDP would hide a difference
            raise LstmbenchError(f"ranks started from different weights: init checksums {sorted(checksums)}")
        # each rank's loss is its summed loss x world / the step's count: their mean is the union's mean loss
        union_losses = np.mean([r[7] for r in rows], axis=0)
        return cls(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                   sum(r[3] for r in rows), sum(r[4] for r in rows), [int(r[4]) for r in rows],
                   max(r[5][0] for r in rows), max(r[5][1] for r in rows), union_losses)

    @property
    def train_time_s(self) -> float:
        """The slowest rank's training time: the job is done when it is."""
        return float(self.step_times_by_rank.sum(axis=1).max())

    @property
    def data_time_s(self) -> float:
        return float(self.data_time_by_rank.mean())

    @property
    def step_times(self) -> np.ndarray:
        """Each step's time: its slowest rank's."""
        return self.step_times_by_rank.max(axis=0)

    def fields(self, planned_wait: float) -> dict[str, Any]:
        return {"rank_step_time_median_s": [float(x) for x in np.median(self.step_times_by_rank, axis=1)],
                "rank_compute_time_s": [float(x) for x in self.compute_by_rank.sum(axis=1)],
                "rank_padded_tokens": self.padded_by_rank,
                "straggler_wait_fraction": straggler_wait_fraction(self.step_times_by_rank, self.compute_by_rank),
                "planned_wait_fraction": planned_wait}
