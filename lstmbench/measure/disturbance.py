"""Disturbance: whether other processes took the CPU from a run while it was timed, judged for every row.

Two readings, both taken by `machine.MachineWatch` around the timed steps, in the run's own process:
- `run_wait_share`: of the time the run's threads wanted a CPU, the share they spent waiting for one
  (Linux's per-thread scheduler statistics, /proc/self/task/*/schedstat: nanoseconds on a CPU and waiting on a
  run queue). On an idle machine a thread hardly ever waits; when another process holds a core, the run's
  threads queue behind it, and torch's OpenMP threads then stall at every barrier for the one that waits. It
  is read in nanoseconds, so a run of 0.05 s has a reading, and reading it costs two scans of a few files.
- `other_cpu_share` (machine.other_share): the machine's busy jiffies not spent by the run, over its capacity.
  It sees a neighbour VM's steal and a busy core the run did not want, but needs a jiffy (10 ms) to pass.

`judge` turns a row into a `Disturbance`; `settle` waits, bounded, for a quiet machine before a run starts.
Rendering a verdict into a sentence happens at the edges (machine.busy_warning, the CLI)."""
from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pandas as pd

WAIT_SHARE = 0.05  # a twentieth of the run's CPU demand spent queueing: quiet runs measured here stay under 1%
# (docs/measurement.md, "A busy machine"), and one spinning process on 2 cores puts a run at 20-45%
BUSY_SHARE = 0.10  # other processes above a tenth of the machine: an idle machine's daemons stay under ~2%
SETTLE_SLICE_S = 0.1  # how long each look at the machine before a run lasts: ten jiffies, a reading of 1% steps
SETTLE_MAX_S = 10.0  # the longest a run waits for the machine to quieten before it starts anyway (and says so)


class Disturbance(enum.Enum):
    QUIET = "quiet"
    DISTURBED = "disturbed"
    UNREAD = "unread"  # neither reading exists (not Linux, or a row from before the readings)
    NOT_JUDGED = "not judged"  # a DDP job: its ranks are each other's other processes


@dataclass(frozen=True)
class SchedTimes:
    """Per thread of this process: (ns on a CPU, ns waiting on a run queue), from its schedstat file."""
    threads: dict[int, tuple[int, int]]


def parse_schedstat(text: str) -> tuple[int, int] | None:
    """'<ns on cpu> <ns waiting> <timeslices>' -> (on cpu, waiting); None where malformed."""
    fields = text.split()
    if len(fields) < 2 or not (fields[0].isdigit() and fields[1].isdigit()):
        return None
    return int(fields[0]), int(fields[1])


def sched_times(task_dir: str = "/proc/self/task") -> SchedTimes | None:
    """Every thread's times now; None where the kernel keeps no scheduler statistics (or not Linux)."""
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return None
    found: dict[int, tuple[int, int]] = {}
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/schedstat", encoding="ascii") as f:
                times = parse_schedstat(f.read())
        except OSError:  # the thread ended meanwhile, or no schedstat
            continue
        if times is not None and tid.isdigit():
            found[int(tid)] = times
    return SchedTimes(found) if found else None


def wait_share(start: SchedTimes | None, end: SchedTimes | None) -> tuple[float, float] | tuple[None, None]:
    """(waited / (on a CPU + waited), seconds waited) over the threads' interval; a thread born meanwhile counts
    from zero, one that ended meanwhile is lost with what it did (torch's threads live as long as the process).
    (None, None) where unread or nothing ran."""
    if start is None or end is None:
        return None, None
    ran = waited = 0
    for tid, (cpu, wait) in end.threads.items():
        cpu0, wait0 = start.threads.get(tid, (0, 0))
        ran += max(0, cpu - cpu0)
        waited += max(0, wait - wait0)
    if ran + waited <= 0:
        return None, None
    return round(waited / (ran + waited), 4), round(waited / 1e9, 6)


def judge(row: dict[str, Any]) -> Disturbance:
    """A row's verdict from its env readings (an ok row's; failed rows have no timings to judge)."""
    if (row.get("world_size") or 1) > 1:
        return Disturbance.NOT_JUDGED
    env = row.get("env") if isinstance(row.get("env"), dict) else {}
    wait, other = _number(env.get("run_wait_share")), _number(env.get("other_cpu_share"))
    # a run's own DataLoader workers queue its threads too, on a machine with fewer cores than they all need:
    # that wait is the run's own cost, not a disturbance, and only the other processes' share can say
    if _number(row.get("loader_workers")):
        wait = None
    # so do XLA's own thread pools on JAX (a Keras row), which no setting of the run bounds: 8-9% on 2 cores
    if row.get("keras_backend") == "jax":
        wait = None
    if wait is not None:
        # the run's own threads say whether they were held back; the other processes' share alone would also
        # flag a run of 1 thread beside a spinner on the other core, which measured the same as on an idle machine
        return Disturbance.DISTURBED if wait > WAIT_SHARE else Disturbance.QUIET
    if other is None:
        return Disturbance.UNREAD
    return Disturbance.DISTURBED if other > BUSY_SHARE else Disturbance.QUIET


def split_disturbed(ok: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the ok rows a figure may use, the ok rows measured on a busy machine), by `judge` on each."""
    flags = [judge(row) is Disturbance.DISTURBED for row in ok.to_dict("records")]
    mask = ok.index.isin(ok.index[flags]) if len(ok) else []
    return ok[~mask] if len(ok) else ok, ok[mask] if len(ok) else ok


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    return float(value) if ok else None


@dataclass(frozen=True)
class Settled:
    """What a run saw of the machine before it started: how long it waited, and the last look's other share."""
    waited_s: float
    other_share: float | None

    def fields(self) -> dict[str, Any]:
        return {"settle_wait_s": round(self.waited_s, 3), "other_cpu_share_before": self.other_share}


def settle(look: Callable[[float], float | None], max_s: float = SETTLE_MAX_S, slice_s: float = SETTLE_SLICE_S,
           now: Callable[[], float] = time.monotonic) -> Settled:
    """Look at the machine (`look(seconds)`: other processes' share over that long, machine.look_at_others) in
    slices of `slice_s` until one shows other processes under BUSY_SHARE, or `max_s` has passed; run from the
    parent between runs, when nothing of lstmbench's computes."""
    began = now()
    share = look(slice_s)
    while share is not None and share > BUSY_SHARE and now() - began < max_s:
        share = look(slice_s)
    return Settled(now() - began, share)
