"""The input pipeline as users build it: each planned batch, collated in this process (workers: 0, what
train.py has always timed) or by a torch DataLoader's worker processes (a batch sampler over the plan, a
collate_fn that pads, pinned memory, prefetching), moved to the device, with the time the loop waited for it.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils import data as tud

from ..data import Dataset
from ..suite import LoaderConfig
from .strategy import Batch, Strategy


def batches(strategy: Strategy, data: Dataset, plan: list[np.ndarray], device: torch.device,
            cfg: LoaderConfig) -> Iterator[tuple[Batch, float]]:
    """For each index array of `plan`, in order: (the batch on `device`, seconds the caller waited for it).
    The wait runs from asking for the batch to having it on the device (a non-blocking copy: to having it
    queued); with workers, the first wait includes starting them. Make one per run, not one per segment:
    each starts its workers afresh (persistent_workers is off); they are ended (tens of ms) when the caller
    asks past the last batch or closes the generator, so close it off the clock."""
    if not cfg.workers:
        for idx in plan:
            h0 = time.perf_counter()
            batch = strategy.collate(data, idx).to(device)
            yield batch, time.perf_counter() - h0
        return
    pin = cfg.pin_memory and device.type == "cuda"
    loader = tud.DataLoader(
        _Indices(len(data)), batch_sampler=[idx.tolist() for idx in plan], collate_fn=WorkerCollate(strategy, data),
        num_workers=cfg.workers, pin_memory=pin, prefetch_factor=cfg.prefetch_factor, persistent_workers=False,
        multiprocessing_context=context(), worker_init_fn=die_with_run)
    if not plan:
        return
    h0 = time.perf_counter()
    it = iter(loader)  # forks the workers: part of the first batch's wait, as in a user's `for b in loader`
    try:
        for _ in plan:
            batch = to_device(next(it).batch, device)
            yield batch, time.perf_counter() - h0
            h0 = time.perf_counter()
    finally:  # the workers end with the loop, also when a step raises (out of memory) or the caller stops
        shutdown = getattr(it, "_shutdown_workers", None)  # what the iterator's __del__ calls; now, not at gc
        if shutdown:
            shutdown()


def die_with_run(worker_id: int) -> None:
    """A worker ends the moment its run's process does (Linux: the kernel kills it), also when the run is
    killed outright: DataLoader's own watchdog would leave it up to 5 s, collating for nobody."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def row_fields(cfg: LoaderConfig) -> dict[str, Any]:
    """The loader settings a row records."""
    return {"loader_workers": cfg.workers, "loader_pin_memory": cfg.pin_memory,
            "loader_prefetch_factor": cfg.prefetch_factor}


def context() -> Any:
    """fork where there is one (Linux): the workers share the data's arrays copy-on-write, nothing is
    pickled, and they start in milliseconds; also from a spawned run process that has used torch (and CUDA:
    the workers only slice numpy arrays). spawn elsewhere: the data set is pickled to every worker."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Pinned (by the DataLoader): copy without waiting. Otherwise Batch.to, as the in-process path moves it."""
    if device.type != "cpu" and batch.tokens.is_pinned():
        return replace(batch, tokens=batch.tokens.to(device, non_blocking=True),
                       labels=batch.labels.to(device, non_blocking=True),
                       lengths_on_device=batch.lengths_on_device.to(device, non_blocking=True))
    return batch.to(device)


class _Indices(tud.Dataset):
    """Items are example indices: the collate_fn takes the rows from the data set itself, in one slice."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@dataclass(frozen=True)
class WorkerCollate:
    """The collate_fn: the strategy's own collate of the batch's indices (picklable, for spawned workers)."""

    strategy: Strategy
    data: Dataset

    def __call__(self, indices: list[int]) -> "Pinnable":
        return Pinnable(self.strategy.collate(self.data, np.asarray(indices, dtype=np.int64)))


@dataclass(frozen=True)
class Pinnable:
    """A Batch the DataLoader can pin: its pin thread pins tensors, sequences, mappings and objects with a
    pin_memory() method, and returns any other object, a dataclass like Batch included, unpinned."""

    batch: Batch

    def pin_memory(self) -> "Pinnable":
        # tokens, labels and the lengths' device copy go to the device; lengths stay on the CPU
        # (pack_padded_sequence), as in Batch.to
        b = self.batch
        return Pinnable(replace(b, tokens=b.tokens.pin_memory(), labels=b.labels.pin_memory(),
                                lengths_on_device=b.lengths_on_device.pin_memory()))
