"""Timing: CUDA's event path exercised through a fake clock and fake events; cold and warm step times."""
from __future__ import annotations

import pytest
import torch

from lstmbench.measure.timing import StepTimer, cold_warm


class FakeGpu:
    """A device whose queue runs behind the host: events complete at the device time when recorded."""

    def __init__(self) -> None:
        self.host = 0.0  # the host's perf_counter
        self.device = 0.0  # when the queued work ends on the device
        self.syncs = 0

    def queue(self, host_s: float, device_s: float) -> None:
        """The host spends host_s launching work that takes device_s on the device."""
        self.host += host_s
        self.device = max(self.device, self.host) + device_s

    def sync(self) -> None:
        self.syncs += 1
        self.host = max(self.host, self.device)

    def event(self) -> "FakeEvent":
        return FakeEvent(self)


class FakeEvent:
    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu, self.at = gpu, None

    def record(self) -> None:
        self.at = max(self.gpu.device, self.gpu.host)  # completes when the work queued before it is done

    def elapsed_time(self, end: "FakeEvent") -> float:
        return (end.at - self.at) * 1000  # milliseconds, as torch.cuda.Event


def test_cuda_steps_are_timed_by_events_with_one_synchronisation_at_each_end_of_a_segment():
    gpu = FakeGpu()
    timer = StepTimer(torch.device("cuda"), sync=gpu.sync, event=gpu.event, now=lambda: gpu.host)
    for _ in range(2):  # two segments of 10 steps: 1 ms to launch each, 4 ms on the device
        with timer.segment():
            for _ in range(10):
                start = timer.mark()
                gpu.queue(0.001, 0.004)
                timer.step(start, timer.mark())
    assert gpu.syncs == 4  # none inside the loop
    # the device's time: each segment's first step also waits for its own launch, the others' launches overlap
    assert timer.step_times() == pytest.approx(([0.005] + [0.004] * 9) * 2)
    assert timer.segment_times() == [(10, pytest.approx(0.041)), (20, pytest.approx(0.041))]  # 1 launch + 10 x 4


def test_a_host_bound_loop_is_timed_by_its_wall_time_not_by_its_events():
    """Launch-bound steps (10 ms of host work for 1 ms of device work): the wall time shows what the user waits."""
    gpu = FakeGpu()
    timer = StepTimer(torch.device("cuda"), sync=gpu.sync, event=gpu.event, now=lambda: gpu.host)
    with timer.segment():
        for _ in range(5):
            start = timer.mark()
            gpu.queue(0.010, 0.001)
            timer.step(start, timer.mark())
    assert sum(timer.step_times()) < 0.06 and timer.segment_times()[0][1] == pytest.approx(0.051)


def test_cpu_steps_are_timed_by_the_host_clock():
    ticks = iter(range(100))
    timer = StepTimer(torch.device("cpu"), now=lambda: float(next(ticks)))
    with timer.segment():
        for _ in range(3):
            start = timer.mark()
            timer.step(start, timer.mark())
    assert timer.step_times() == [1.0, 1.0, 1.0] and timer.segment_times() == [(3, 3.0)]


def test_one_shape_costs_nothing_and_a_first_occurrence_costs_its_excess():
    same = cold_warm([0.5, 0.1], [0.1, 0.1, 0.1], [(8, 4)] * 5, [32] * 5)
    assert same.shape_warmup_s == 0 and same.timed_steady == [0.1, 0.1, 0.1]
    # a new shape in the timed steps: 30 ms the first time, 10 ms after
    cw = cold_warm([0.5], [0.1, 0.03, 0.01, 0.01, 0.1], [(8, 4), (8, 4), (8, 9), (8, 9), (8, 9), (8, 4)],
                   [32, 32, 72, 72, 72, 32])
    assert cw.shape_warmup_s == pytest.approx(0.02) and cw.timed_extra() == pytest.approx(0.02)
    assert cw.timed_steady == pytest.approx([0.1, 0.01, 0.01, 0.01, 0.1])
    assert cw.timed_extra(1) == 0 and cw.timed_extra(2) == pytest.approx(0.02)


def test_a_shape_seen_once_is_priced_by_a_line_through_the_steady_steps():
    # steady steps cost 1 ms + 0.1 ms a cell; the once-seen shape of 50 cells took 9 ms: 3 ms over 6 ms
    cells = [10, 20, 30, 40]
    steady = [0.001 + 0.0001 * c for c in cells]
    cw = cold_warm([0.5] + steady[1:], steady + [0.009], [(1, c) for c in cells * 2 + [50]], cells * 2 + [50])
    assert cw.shape_warmup_s == pytest.approx(0.003)


def test_warm_up_shapes_count_and_the_runs_first_step_is_its_start_up():
    # warm-up saw (8, 4) then a new (8, 9) that took 20 ms over its repeats; the first step (start-up) is not a shape
    cw = cold_warm([0.9, 0.03], [0.01, 0.01, 0.1], [(8, 4), (8, 9), (8, 9), (8, 9), (8, 4)], [32, 72, 72, 72, 32])
    assert cw.warmup_extra == pytest.approx(0.02) and cw.timed_extra() == 0
    assert cw.shape_warmup_s == pytest.approx(0.02)
