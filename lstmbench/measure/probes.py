"""Probes: honest clocks (the device synchronised before each read) and peak memory."""
from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import LstmbenchError


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when torch sees a GPU, else cpu. Refuses cuda without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LstmbenchError("device cuda was asked for, but torch sees no CUDA GPU "
                             "(torch.cuda.is_available() is False)")
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
    """Start the peak from now: CUDA's counters, or on Linux the process's RSS high-water mark (VmHWM),
    which would otherwise remember the imports' transient peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5 resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak bytes allocated since the last reset. CPU: this process's peak resident set size since
    the last reset (Linux), else since it started.

    Each run has a process of its own, so on CPU this is the run's peak, including the interpreter
    and torch itself (see `rss_bytes` at the run's start for what was resident before it began)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return _status_bytes("VmHWM") or max_rss_bytes()


def max_rss_bytes() -> int:
    """getrusage's peak resident set size, in bytes: macOS gives bytes, Linux and the BSDs KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def peak_memory_reserved_bytes(device: torch.device) -> int | None:
    """CUDA: peak bytes held by the caching allocator since the last reset (None on CPU)."""
    return int(torch.cuda.max_memory_reserved(device)) if device.type == "cuda" else None


CPU_OOM = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")  # c10's words


def out_of_memory(e: BaseException) -> bool:
    """Whether an exception is an allocation failure: CUDA's OutOfMemoryError, Python's MemoryError, or the
    RuntimeError that torch's CPU allocator raises."""
    return (isinstance(e, (torch.OutOfMemoryError, MemoryError))
            or isinstance(e, RuntimeError) and any(text in str(e) for text in CPU_OOM))


@contextlib.contextmanager
def refuse_out_of_memory(what: str) -> Iterator[None]:
    """An allocation failure inside the block becomes one LstmbenchError sentence (for commands, not runs:
    a run's becomes an `oom` row)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only allocation failures are translated; the rest go up unchanged
        if not out_of_memory(e):
            raise
        raise LstmbenchError(f"{what}: out of memory: {' '.join(str(e).split())[:200]}") from None


def memory_bytes(device: str) -> int:
    """The memory a run can have: the GPU's (CUDA) or the machine's (CPU); 0 where unknown."""
    try:
        if device == "cuda":
            return int(torch.cuda.get_device_properties(0).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AttributeError):
        return 0


def rss_bytes() -> int:
    """Resident memory now (0 where /proc is missing)."""
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TensorMemory(TorchDispatchMode):
    """The bytes of tensor storage alive, and their peak, while the block runs: every storage an op dispatched
    inside the block returns is counted once, from its creation until torch frees it (a finalizer on the
    storage, which torch keeps alive as long as anything, autograd's saved tensors included, holds it).
    `hold` adds what was alive before (weights, gradients, optimizer state, the batch).

    This counts what a training step allocates as tensors, exactly and the same on every machine; not
    counted: a kernel's private scratch that never becomes a tensor, and the allocator's own overhead."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes: dict[int, int] = {}  # storage -> its bytes, while alive
        self.live = self.peak = 0

    def hold(self, tensors: Iterable[object]) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._count(t)

    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata  # the C++ storage: views and in-place results share it
        if key in self.bytes:
            return
        self.bytes[key] = storage.nbytes()
        self.live += self.bytes[key]
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self.bytes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self._count(t)
        return out


class KernelProbe(TorchDispatchMode):
    """Which LSTM implementation ran, read from the aten ops dispatched inside the block:
    cudnn (_cudnn_rnn), miopen, onednn (mkldnn_rnn_layer), or generic (PyTorch's per-timestep loop, which
    is what packed sequences get on CPU); and the dtype it ran in (`dtype`): the fused kernel's input, or the
    generic loop's first gate activation. Autocast decides that dtype per op, not the suite: under bf16
    autocast on CUDA, torch's wrapper for _cudnn_rnn casts to float16 (aten/src/ATen/cudnn/AutocastRNN.cpp)."""

    KERNELS = (("_cudnn_rnn", "cudnn"), ("miopen_rnn", "miopen"), ("mkldnn_rnn_layer", "onednn"))
    GENERIC = ("_thnn_fused_lstm_cell", "sigmoid_", "sigmoid")  # CUDA's fused cell; on CPU the gates' sigmoid

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()
        self.dtypes: dict[str, torch.dtype] = {}  # op -> its first tensor argument's dtype, first call

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.overloadpacket.__name__
        self.ops.add(name)
        if name not in self.dtypes and args and isinstance(args[0], torch.Tensor):
            self.dtypes[name] = args[0].dtype
        return func(*args, **(kwargs or {}))

    @property
    def kernel(self) -> str:
        return next((name for op, name in self.KERNELS if op in self.ops), "generic")

    @property
    def dtype(self) -> str:
        """'float32', 'bfloat16', 'float16', 'float64': what the LSTM computed in ('' if no LSTM ran)."""
        ops = [op for op, _ in self.KERNELS] + list(self.GENERIC)
        found = next((self.dtypes[op] for op in ops if op in self.dtypes), None)
        return str(found).removeprefix("torch.") if found is not None else ""


_BF16_LSTM: dict[str, bool] = {}


def cpu_bf16_lstm() -> bool:
    """Whether oneDNN runs an LSTM under bf16 autocast on this CPU. CPUs without native bf16 (no avx512_bf16,
    no AMX) refuse it with 'could not create a primitive descriptor': ask once, with a 1x2x4 batch."""
    if "cpu" not in _BF16_LSTM:
        lstm = torch.nn.LSTM(4, 4, batch_first=True)
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                lstm(torch.zeros(1, 2, 4))
            _BF16_LSTM["cpu"] = True
        except RuntimeError:
            _BF16_LSTM["cpu"] = False
    return _BF16_LSTM["cpu"]


def host_syncs(step: Callable[[], object]) -> list[str]:
    """CUDA: what one call of `step` does that synchronises the host with the device, as CUDA's sync-debug mode
    reports it (one warning per synchronising call); the mode is restored after."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [str(w.message) for w in caught if "synchroniz" in str(w.message)]
