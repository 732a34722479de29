"""The machine around a run: what pyperf records that matters for a timing (CPU governor and frequency, load,
GPU clocks and temperature) and, above all, how much of the CPU *other* processes took while the run was timed.

A `MachineWatch` is started at a run's beginning and stopped at its end, in the run's own process; `stop()`
gives a flat dict for the row's `env`, and `busy_warning` turns it into the report's sentence. Every read
degrades to None where Linux's /proc and /sys (or the GPU tools) are missing."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

from .disturbance import BUSY_SHARE, WAIT_SHARE, SchedTimes, sched_times, wait_share

SMI_TIMEOUT_S = 5.0  # nvidia-smi answers in well under a second; a hung driver must not hang the run
CPU_KEYS = ("cpu_governor", "cpu_mhz_start", "cpu_mhz_end", "load_before", "load_after", "other_cpu_share",
            "run_wait_share", "run_wait_s", "cpu_count")
GPU_KEYS = ("gpu_driver", "gpu_sm_clock_mhz", "gpu_max_sm_clock_mhz", "gpu_temperature_c", "gpu_other_processes")


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies summed over all CPUs from /proc/stat's first line."""
    busy: int
    total: int
    nice: int = 0  # of busy: processes at a positive nice value, which yield to a run at the default priority


@dataclass
class MachineWatch:
    """What the machine was doing around one run: `start()` at its beginning, `stop()` at its end, both in the
    run's own process (the run's own CPU time, threads and child processes included, is not 'other')."""
    device: str
    cpu_mhz_start: float | None
    load_before: float | None
    cpu_start: CpuTimes | None
    own_start_s: float | None  # CPU seconds of this process, its threads and descendants, at the start
    sched_start: SchedTimes | None = None  # each of this process's threads: time on a CPU and queued for one

    @classmethod
    def start(cls, device: torch.device | str) -> MachineWatch:
        # the cheap reads first and the two CPU-time counters last and together, so the window they span is
        # the watch itself
        mhz, load = cpu_mhz(), load1()
        return cls(device=str(device), cpu_mhz_start=mhz, load_before=load, cpu_start=cpu_times(),
                   own_start_s=own_cpu_seconds(), sched_start=sched_times())

    def stop(self) -> dict[str, Any]:
        sched_end, cpu_end, own_end = sched_times(), cpu_times(), own_cpu_seconds()
        waited, waited_s = wait_share(self.sched_start, sched_end)
        env: dict[str, Any] = {
            "cpu_governor": cpu_governor(),
            "cpu_mhz_start": self.cpu_mhz_start,
            "cpu_mhz_end": cpu_mhz(),
            "load_before": self.load_before,
            "load_after": load1(),
            "other_cpu_share": other_share(self.cpu_start, cpu_end, self.own_start_s, own_end),
            "run_wait_share": waited,
            "run_wait_s": waited_s,
            "cpu_count": os.cpu_count(),
        }
        if _device_type(self.device) == "cuda":
            env.update(gpu_state(self.device))
        return env


def busy_warning(machine: dict[str, Any], waits_count: bool = True) -> str:
    """'' for a quiet machine, else one sentence, e.g. 'the run's threads waited for a CPU 31% of the time;
    other processes used 38% of the CPU during the run (load 1.9 before, 2.4 after, 2 cores)'; a powersave
    governor adds a clause, joined with '; '. `waits_count`: False for a run with DataLoader workers, whose
    own workers queue its threads (disturbance.judge)."""
    parts = []
    wait = machine.get("run_wait_share")
    if waits_count and isinstance(wait, (int, float)) and wait > WAIT_SHARE:
        parts.append(f"the run's threads waited for a CPU {wait:.0%} of the time")
    share = machine.get("other_cpu_share")
    if isinstance(share, (int, float)) and share > BUSY_SHARE:
        loads = [f"{machine[k]:.1f} {word}" for k, word in (("load_before", "before"), ("load_after", "after"))
                 if isinstance(machine.get(k), (int, float))]
        detail = ["load " + loads[0], *loads[1:]] if loads else []
        cores = machine.get("cpu_count")
        if isinstance(cores, (int, float)) and cores == cores:  # a row read back may hold 2.0 or NaN
            detail.append(f"{int(cores)} core" + ("" if cores == 1 else "s"))
        parts.append(f"other processes used {share:.0%} of the CPU during the run"
                     + (f" ({', '.join(detail)})" if detail else ""))
    # most cloud VMs have no governor or 'schedutil': only powersave is worth a word (it holds clocks down)
    if machine.get("cpu_governor") == "powersave":
        parts.append("the CPU frequency governor was powersave")
    return "; ".join(parts)


# --- CPU -----------------------------------------------------------------------------------------------------

def read_text(path: str) -> str:
    """This module's /proc and /sys reads go through here (OSError where the file is missing or unreadable)."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _try_read(path: str) -> str | None:
    try:
        return read_text(path)
    except OSError:
        return None


def parse_proc_stat(text: str) -> CpuTimes | None:
    """The aggregate 'cpu' line: user nice system idle iowait irq softirq steal [guest guest_nice].
    Busy is everything but idle and iowait; steal counts as busy (a neighbour VM took it); guest time is
    already inside user and nice, so it is left out of the total."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                ticks = [int(x) for x in fields[1:9]]
            except ValueError:
                return None
            if len(ticks) < 4:
                return None
            total = sum(ticks)
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            return CpuTimes(busy=total - idle, total=total, nice=ticks[1])
    return None


def cpu_times() -> CpuTimes | None:
    text = _try_read("/proc/stat")
    return parse_proc_stat(text) if text is not None else None


def parse_pid_stat(text: str) -> int | None:
    """utime + stime + cutime + cstime (clock ticks) from /proc/<pid>/stat; the name in parentheses may hold
    spaces, so fields are counted after its closing parenthesis."""
    try:
        fields = text[text.rindex(")") + 2:].split()
        return sum(int(x) for x in fields[11:15])  # fields 14-17 of the man page; 'state' is field 3
    except (ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """Live children of pid, from each thread's children file (Linux >= 4.2, CONFIG_PROC_CHILDREN)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for tid in tids:
        text = _try_read(f"/proc/{pid}/task/{tid}/children")
        found += [int(x) for x in (text or "").split() if x.isdigit()]
    return found


def _descendant_ticks(pid: int, depth: int = 0) -> int:
    """CPU ticks of pid's live descendants (each one's own time and its reaped children's)."""
    if depth > 8:  # a run's helpers (DataLoader, compile workers) are one or two levels deep
        return 0
    total = 0
    for child in _children(pid):
        text = _try_read(f"/proc/{child}/stat")
        total += (parse_pid_stat(text) or 0) if text is not None else 0
        total += _descendant_ticks(child, depth + 1)
    return total


def _clock_tick() -> int:
    """Jiffies per second in /proc's counters."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100  # Linux's USER_HZ everywhere in practice


def own_cpu_seconds() -> float | None:
    """CPU seconds of the run's own work: this process with all its threads (os.times), its reaped children,
    and its live descendants (DataLoader workers, torch.compile workers), so none of it counts as 'other'.
    A child alive at the start and reaped before the end is counted once: its later reaped total minus its
    earlier live total is what it did during the watch."""
    try:
        t = os.times()
    except OSError:
        return None
    return t.user + t.system + t.children_user + t.children_system + _descendant_ticks(os.getpid()) / _clock_tick()


def other_share(start: CpuTimes | None, end: CpuTimes | None, own_start_s: float | None,
                own_end_s: float | None) -> float | None:
    """(machine busy - own) / machine capacity over the interval, clamped to [0, 1]; None where unread."""
    if start is None or end is None or own_start_s is None or own_end_s is None:
        return None
    total = end.total - start.total
    if total <= 0:  # too short an interval for a single jiffy
        return None
    other = (end.busy - start.busy) - (own_end_s - own_start_s) * _clock_tick()
    return round(min(1.0, max(0.0, other / total)), 4)


def look_at_others(seconds: float) -> float | None:
    """Other processes' share of the machine over the next `seconds` (this process sleeps meanwhile), niced
    processes left out: they take only the CPU that runs at the default priority leave them (a spinning
    `nice -n 19` process showed 50% here before a run and 1-2% during it; were one to disturb a run anyway, the
    run's own wait reading would say so)."""
    start, own0 = cpu_times(), own_cpu_seconds()
    time.sleep(seconds)
    end = cpu_times()
    if start is None or end is None:
        return None
    return other_share(CpuTimes(start.busy - start.nice, start.total), CpuTimes(end.busy - end.nice, end.total),
                       own0, own_cpu_seconds())


def cpu_governor() -> str | None:
    text = _try_read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return (text.strip() or None) if text is not None else None


def parse_cpuinfo_mhz(text: str) -> float | None:
    """Mean of /proc/cpuinfo's 'cpu MHz' lines (x86; other architectures have none)."""
    values = []
    for line in text.splitlines():
        if line.startswith("cpu MHz"):
            try:
                values.append(float(line.split(":", 1)[1]))
            except (ValueError, IndexError):
                pass
    return round(sum(values) / len(values), 1) if values else None


def cpu_mhz() -> float | None:
    """Mean current frequency over cores: cpufreq's scaling_cur_freq (kHz), else /proc/cpuinfo."""
    khz = []
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        text = _try_read(path)
        if text is not None and text.strip().isdigit():
            khz.append(int(text))
    if khz:
        return round(sum(khz) / len(khz) / 1000, 1)
    text = _try_read("/proc/cpuinfo")
    return parse_cpuinfo_mhz(text) if text is not None else None


def load1() -> float | None:
    """1-minute load average (OSError where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# --- GPU -----------------------------------------------------------------------------------------------------

def _device_type(device: str) -> str:
    return device.split(":", 1)[0]


def _gpu_id(device: str) -> str:
    """The GPU as NVML and nvidia-smi name it: 'GPU-<uuid>' (immune to CUDA_VISIBLE_DEVICES renumbering),
    else torch's index."""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        import torch

        if ":" not in device:
            index = torch.cuda.current_device()
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    except Exception:  # noqa: BLE001 - no CUDA build, no uuid field, no driver: the index will do
        return str(index)


def _has_cuda_context() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001
        return False


def count_other_gpu_processes(pids: list[int], own_pid: int, own_context: bool) -> int:
    """Compute processes on the GPU other than this one. Inside a PID namespace (a container) the driver lists
    host PIDs, so this process is not found by its own PID: then one of the listed ones is taken to be it."""
    others = [p for p in pids if p != own_pid]
    if own_context and own_pid not in pids and others:
        return len(others) - 1
    return len(others)


def _attempt(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - NVMLError and friends: one field unread is not the others' failure
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_state(gpu_id: str) -> dict[str, Any] | None:
    """The GPU keys through pynvml; None where pynvml is absent or cannot start."""
    try:
        import pynvml  # optional: nvidia-ml-py
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - ImportError, or NVMLError without a driver
        return None
    try:
        if gpu_id.startswith("GPU-"):
            handle = pynvml.nvmlDeviceGetHandleByUUID(gpu_id)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
        pids = _attempt(lambda: [p.pid for p in pynvml.nvmlDeviceGetComputeProcesses(handle)])
        return {
            "gpu_driver": _attempt(lambda: _text(pynvml.nvmlSystemGetDriverVersion())),
            "gpu_sm_clock_mhz": _attempt(lambda: int(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))),
            "gpu_max_sm_clock_mhz": _attempt(
                lambda: int(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM))),
            "gpu_temperature_c": _attempt(
                lambda: int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))),
            "gpu_other_processes": None if pids is None else count_other_gpu_processes(
                pids, os.getpid(), _has_cuda_context()),
        }
    except Exception:  # noqa: BLE001 - no such GPU
        return None
    finally:
        _attempt(pynvml.nvmlShutdown)


def _number(text: str) -> int | None:
    """nvidia-smi's numbers: '1980' or '1980.00'; '[N/A]' and the like are None."""
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_smi_gpu(text: str) -> dict[str, Any] | None:
    """The first line of nvidia-smi's
    `--query-gpu=driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader,nounits`."""
    fields = [f.strip() for f in text.strip().splitlines()[0].split(",")] if text.strip() else []
    if len(fields) != 4:
        return None
    return {"gpu_driver": fields[0] or None, "gpu_sm_clock_mhz": _number(fields[1]),
            "gpu_max_sm_clock_mhz": _number(fields[2]), "gpu_temperature_c": _number(fields[3])}


def _smi(args: list[str]) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def smi_state(gpu_id: str) -> dict[str, Any] | None:
    """The GPU keys through nvidia-smi; None where it is missing, fails or times out."""
    text = _smi([f"--id={gpu_id}", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,temperature.gpu",
                 "--format=csv,noheader,nounits"])
    state = parse_smi_gpu(text) if text is not None else None
    if state is None:
        return None
    apps = _smi([f"--id={gpu_id}", "--query-compute-apps=pid", "--format=csv,noheader,nounits"])
    pids = None if apps is None else [int(x) for x in apps.split() if x.strip().isdigit()]
    state["gpu_other_processes"] = None if pids is None else count_other_gpu_processes(
        pids, os.getpid(), _has_cuda_context())
    return state


def gpu_state(device: str) -> dict[str, Any]:
    """The GPU keys for a CUDA device: pynvml if importable, else nvidia-smi; all None where neither answers."""
    gpu_id = _gpu_id(device)
    state = nvml_state(gpu_id) or smi_state(gpu_id) or {}
    return {k: state.get(k) for k in GPU_KEYS}


def device_name(device: str) -> str:
    """What a row calls its device: 'cpu', or the GPU's name as torch gives it ('NVIDIA H200'), so that a failed
    run's row lands in the same report section as its ok rows. Where this process has no CUDA context (the
    parent of the runs must not make one: it would hold GPU memory for the whole suite), NVML or nvidia-smi
    name the GPU; 'cuda' only where neither answers."""
    kind = _device_type(device)
    if kind == "auto":
        try:
            import torch

            kind = "cuda" if torch.cuda.is_available() else "cpu"  # cudaGetDeviceCount: no context
        except Exception:  # noqa: BLE001 - no torch CUDA build
            kind = "cpu"
    if kind != "cuda":
        return kind
    index = device.split(":", 1)[1] if ":" in device else "0"
    if _has_cuda_context():
        import torch

        return torch.cuda.get_device_name(int(index))
    return _nvml_name(visible_gpu(index)) or _smi_name(visible_gpu(index)) or "cuda"


def visible_gpu(index: str) -> str:
    """torch's GPU `index` as NVML and nvidia-smi number or name it: through CUDA_VISIBLE_DEVICES if set."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[int(index)] if int(index) < len(visible) else index


def _nvml_name(gpu: str) -> str | None:
    try:
        import pynvml  # optional: nvidia-ml-py

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - absent, or no driver
        return None
    try:
        handle = (pynvml.nvmlDeviceGetHandleByUUID(gpu) if gpu.startswith(("GPU-", "MIG-"))
                  else pynvml.nvmlDeviceGetHandleByIndex(int(gpu)))
        return _text(pynvml.nvmlDeviceGetName(handle)) or None
    except Exception:  # noqa: BLE001 - an id NVML does not know
        return None
    finally:
        _attempt(pynvml.nvmlShutdown)


def _smi_name(gpu: str) -> str | None:
    text = _smi([f"--id={gpu}", "--query-gpu=name", "--format=csv,noheader"])
    return text.strip().splitlines()[0].strip() or None if text and text.strip() else None
