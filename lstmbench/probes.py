"""Probes: honest clocks (the device synchronised before each read) and peak memory."""
from __future__ import annotations

import resource
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import LstmbenchError


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when torch sees a GPU, else cpu. Refuses cuda without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LstmbenchError("device cuda was asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is False)")
    return torch.device(name)


class Clock:
    """perf_counter, read only after the device has finished its queued work."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak bytes allocated since the last reset. CPU: this process's peak resident set size.

    Each run has a process of its own, so on CPU this is the run's peak, including the interpreter
    and torch itself (see `baseline_rss_bytes` for what was resident before the run began)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return current_peak_rss_bytes()


def current_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class KernelProbe(TorchDispatchMode):
    """Which LSTM implementation ran, read from the aten ops dispatched inside the block:
    cudnn (_cudnn_rnn), miopen, onednn (mkldnn_rnn_layer), or generic (PyTorch's per-timestep loop, which
    is what packed sequences get on CPU)."""

    KERNELS = (("_cudnn_rnn", "cudnn"), ("miopen_rnn", "miopen"), ("mkldnn_rnn_layer", "onednn"))

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    @property
    def kernel(self) -> str:
        return next((name for op, name in self.KERNELS if op in self.ops), "generic")
