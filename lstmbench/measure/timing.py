"""Timing the training steps as a user's loop runs them, and splitting what new batch shapes cost from the rest.

`StepTimer`: on a CPU, the host does the work, so `perf_counter` at each step's ends is honest. On CUDA the host
only queues work: an event is recorded on the stream at each step's ends, with no synchronisation inside the
loop (the host prepares and launches step k+1 while the GPU runs step k, as in a user's loop), and the
device is synchronised once at each end of a segment (the steps between two periodic evaluations). A
segment's time is then its wall time on CUDA, and the sum of its steps' times on a CPU.

`ColdWarm`: the first time a batch shape is seen, backends pay a set-up (oneDNN primitive creation, cuDNN
autotuning under `cudnn.benchmark`, a torch.compile recompilation). Warm-up runs on batches set aside for
it, so the timed steps include the first occurrence of every shape warm-up did not see, as a user's run
does. `shape_warmup_s` is what those first occurrences took over their steady-state time, measured: the
median of the same shape's later steps, or, for a shape that never comes back, a straight line through the
later steps' times against their padded cells. The steady-state figures leave it out; the cold ones keep it.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch


class StepTimer:
    """Marks at each step's ends, read after the segment; `sync` and `event` are injectable for tests."""

    def __init__(self, device: torch.device, synchronous: bool = False, sync: Callable[[], Any] | None = None,
                 event: Callable[[], Any] | None = None, now: Callable[[], float] = time.perf_counter):
        # synchronous: a DDP rank, whose step hooks read host clocks; events would not see its wait
        self.events = device.type == "cuda" and not synchronous
        self.synchronous = synchronous and device.type == "cuda"
        cuda = device.type == "cuda"
        self._sync = sync or ((lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None))
        self._event = event or (lambda: torch.cuda.Event(enable_timing=True))
        self.now = now
        self.marks: list[tuple[Any, Any]] = []  # (start, end) of each step
        self.segments: list[tuple[int, float]] = []  # (steps so far, segment wall seconds)

    def mark(self) -> Any:
        if self.events:
            e = self._event()
            e.record()
            return e
        if self.synchronous:
            self._sync()
        return self.now()

    def step(self, start: Any, end: Any) -> None:
        self.marks.append((start, end))

    @contextlib.contextmanager
    def segment(self) -> Iterator[None]:
        """The steps between two evaluations: one synchronisation before, one after."""
        self._sync()
        t0 = self.now()
        yield
        self._sync()
        self.segments.append((len(self.marks), self.now() - t0))

    def step_times(self) -> list[float]:
        """Seconds of each step (after the last segment ended: every event has completed)."""
        if self.events:
            return [start.elapsed_time(end) / 1000 for start, end in self.marks]
        return [float(end - start) for start, end in self.marks]

    def segment_times(self) -> list[tuple[int, float]]:
        """(steps so far, seconds) of each segment: the wall time on CUDA, the sum of its steps elsewhere."""
        if self.events:
            return self.segments
        times, out, start = self.step_times(), [], 0
        for end, _ in self.segments:
            out.append((end, float(sum(times[start:end]))))
            start = end
        return out


@dataclass
class ColdWarm:
    """A run's steps (warm-up, then timed) split into steady state and what first occurrences of shapes cost."""

    steady: list[float]  # per step: its own time, or for a first occurrence, the estimate of its steady time
    extra: list[float]  # per step: its time over its steady time (0 but for first occurrences)
    warmup: int  # how many of the steps were warm-up steps (the rest were timed)

    @property
    def shape_warmup_s(self) -> float:
        """Seconds that the first occurrences of shapes took over their steady-state time, in warm-up and in
        the timed steps: what a user's run pays for them. Never negative (the estimates' noise over many steps
        sums towards zero and is clipped there); 0 where every batch has one shape."""
        return max(0.0, float(sum(self.extra)))

    def timed_extra(self, steps: int | None = None) -> float:
        """What the first `steps` timed steps paid for new shapes (all of them: None)."""
        timed = self.extra[self.warmup:]
        return max(0.0, float(sum(timed if steps is None else timed[:steps])))

    @property
    def warmup_extra(self) -> float:
        return max(0.0, float(sum(self.extra[:self.warmup])))

    @property
    def timed_steady(self) -> list[float]:
        return self.steady[self.warmup:]


def cold_warm(warmup: list[float], timed: list[float], keys: list[Any], cells: list[int]) -> ColdWarm:
    """Split step times into steady state and first-occurrence costs. `keys` and `cells` (padded cells) are
    per step, warm-up steps first. The run's very first step is its start-up, common to every strategy: its
    shape counts as seen, and its time is left out (it is in warmup_time_s)."""
    times = list(warmup) + list(timed)
    if not times:
        return ColdWarm([], [], 0)
    known = {keys[0]}
    first = [False]
    for key in keys[1:]:
        first.append(key not in known)
        known.add(key)
    later = [i for i in range(1, len(times)) if not first[i]]
    by_key: dict[Any, list[float]] = {}
    for i in later:
        by_key.setdefault(keys[i], []).append(times[i])
    line = _fit(np.array([cells[i] for i in later], dtype=float), np.array([times[i] for i in later], dtype=float))
    steady, extra = [times[0]], [0.0]
    for i in range(1, len(times)):
        again = by_key.get(keys[i])
        if not first[i]:
            estimate = times[i]
        else:
            estimate = float(np.median(again)) if again else line(cells[i]) if line else times[i]
        steady.append(estimate if estimate > 0 else times[i])  # not clipped at the step's time: noise cancels
        extra.append(times[i] - steady[-1])
    return ColdWarm(steady, extra, len(warmup))


def _fit(cells: np.ndarray, times: np.ndarray) -> Callable[[float], float] | None:
    """time = a + b * cells through the steady steps (least squares); None with fewer than 3 or one size."""
    if len(cells) < 3 or np.ptp(cells) == 0:
        return (lambda c: float(np.median(times / cells)) * c) if len(cells) else None
    b, a = np.polyfit(cells, times, 1)
    return lambda c: float(a + b * c)
