"""MachineWatch: the run's own work is not 'other', another process's is, and every read degrades to None."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import types

import pytest
import torch

from lstmbench.measure import machine
from lstmbench.measure.machine import BUSY_SHARE, CPU_KEYS, GPU_KEYS, MachineWatch, busy_warning

CORES = os.cpu_count() or 1
LINUX_PROC = os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")
needs_proc = pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc")


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _hash_until(stop: threading.Event) -> None:
    block = b"x" * (1 << 20)  # hashlib drops the GIL for large inputs: a second core busy in this process
    while not stop.is_set():
        hashlib.sha256(block).digest()


def _others_ticks() -> int:
    """The reference, counted the other way round: CPU ticks of every process on the machine but this one and
    its descendants (each one's own time and its reaped children's)."""
    mine, stack = {os.getpid()}, [os.getpid()]
    while stack:
        children = machine._children(stack.pop())
        mine.update(children)
        stack += children
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in mine:
            try:
                total += machine.parse_pid_stat(machine.read_text(f"/proc/{name}/stat")) or 0
            except OSError:  # it exited meanwhile
                pass
    return total


def _watch(work) -> tuple[dict, float, float]:
    """Watch `work()`; also give the share other processes took, summed process by process (the reference),
    and the share this process and its reaped children took (os.times)."""
    ref0, cpu0, own0 = _others_ticks(), machine.cpu_times(), os.times()
    watch = MachineWatch.start("cpu")
    work()
    env = watch.stop()
    ref1, cpu1, own1 = _others_ticks(), machine.cpu_times(), os.times()
    total = cpu1.total - cpu0.total
    own = sum(own1[:4]) - sum(own0[:4])  # user, system, children's user and system
    return env, (ref1 - ref0) / total, own * machine._clock_tick() / total


AGREE = 0.08  # the two ways of counting 'other' agree within ~0.03 here, even with other sessions busy
QUIET = 0.02  # other processes below this share: the machine was quiet, so the absolute figures apply
OWN = 0.1  # the run's own share must exceed AGREE for a miscount of it as 'other' to show


def _watch_agreeing(work, tries: int = 3) -> tuple[dict, float, float]:
    """`_watch`, again where the reference was thrown off: a process of another session that exits inside the
    window unreaped (or whose parent ignores SIGCHLD) takes its ticks out of the process-by-process sum, and
    a loaded machine may starve the run's own work. A miscount of the run's own work repeats on every try."""
    for _ in range(tries):
        env, reference, own = _watch(work)
        if own > OWN and abs(env["other_cpu_share"] - reference) < AGREE:
            break
    return env, reference, own


@needs_proc
def test_own_work_and_threads_are_not_other():
    def work() -> None:
        stop = threading.Event()
        helper = threading.Thread(target=_hash_until, args=(stop,))
        helper.start()
        try:
            _spin(0.5)
        finally:
            stop.set()
            helper.join()

    env, reference, own = _watch_agreeing(work)
    assert own > OWN  # the run's own work was large: counted as 'other', it would show
    assert abs(env["other_cpu_share"] - reference) < AGREE
    if reference < QUIET:  # other sessions may share this machine; alone, the figure is near zero
        assert env["other_cpu_share"] < 0.25
        assert busy_warning(env) == ""


@needs_proc
def test_own_child_process_is_not_other():
    """A child of the run (a DataLoader or compile worker) is the run's own work, alive or reaped."""
    def work() -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 0.6\n"
                                  "while time.time() < t: pass"])
        try:
            child.wait(timeout=10)
        finally:
            child.kill()
            child.wait()

    env, reference, own = _watch_agreeing(work)
    assert own > OWN
    assert abs(env["other_cpu_share"] - reference) < AGREE
    if reference < QUIET:
        assert env["other_cpu_share"] < 0.25


@needs_proc
def test_another_process_is_other():
    # a spinner that is not this process's descendant (sh starts it in the background and exits), bounded
    # by its own 5 s deadline and killed as soon as the watch ends
    code = "import time\nt = time.time() + 5\nwhile time.time() < t: pass"
    sh = subprocess.run(["sh", "-c", '"$0" -c "$1" >/dev/null 2>&1 & echo $!', sys.executable, code],
                        capture_output=True, text=True, timeout=10, check=True)
    pid = int(sh.stdout.strip())
    try:
        assert pid not in machine._children(os.getpid())
        time.sleep(0.2)  # let it start spinning
        watch = MachineWatch.start("cpu")
        time.sleep(1.0)
        env = watch.stop()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert env["other_cpu_share"] > 0.6 / CORES  # one busy core of N is 1/N
    assert env["cpu_count"] == CORES
    assert set(CPU_KEYS) <= set(env) and not set(GPU_KEYS) & set(env)
    assert busy_warning(env).startswith(f"other processes used {env['other_cpu_share']:.0%} of the CPU during the run")


def test_busy_warning_text():
    busy = {"other_cpu_share": 0.38, "load_before": 1.9, "load_after": 2.4, "cpu_count": 2,
            "cpu_governor": "schedutil", "cpu_mhz_start": 2445.4, "cpu_mhz_end": 2445.4}
    assert busy_warning(busy) == ("other processes used 38% of the CPU during the run "
                                  "(load 1.9 before, 2.4 after, 2 cores)")
    assert busy_warning({**busy, "cpu_governor": "powersave"}) == (
        "other processes used 38% of the CPU during the run (load 1.9 before, 2.4 after, 2 cores); "
        "the CPU frequency governor was powersave")
    assert busy_warning({**busy, "load_before": None, "cpu_count": 1}) == (
        "other processes used 38% of the CPU during the run (load 2.4 after, 1 core)")
    assert busy_warning({"other_cpu_share": 0.38}) == "other processes used 38% of the CPU during the run"
    assert busy_warning({**busy, "other_cpu_share": BUSY_SHARE}) == ""  # at the threshold is still quiet
    assert busy_warning({**busy, "other_cpu_share": 0.05}) == ""
    assert busy_warning({**busy, "other_cpu_share": None, "cpu_governor": "powersave"}) == (
        "the CPU frequency governor was powersave")
    assert busy_warning({}) == ""


def test_unreadable_proc_gives_none(monkeypatch):
    def refuse(path: str) -> str:
        raise OSError(f"no {path}")

    def no_load():
        raise OSError("no load average")

    monkeypatch.setattr(machine, "read_text", refuse)
    monkeypatch.setattr(os, "getloadavg", no_load)
    env = MachineWatch.start("cpu").stop()
    assert set(env) == set(CPU_KEYS)
    assert {k: v for k, v in env.items() if k != "cpu_count"} == dict.fromkeys(set(CPU_KEYS) - {"cpu_count"})
    assert env["cpu_count"] == os.cpu_count()
    assert busy_warning(env) == ""


def test_parsers():
    stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\nintr 1 2\n"
    assert machine.parse_proc_stat(stat) == machine.CpuTimes(busy=170, total=990, nice=5)  # guest 7 is inside user
    assert machine.parse_proc_stat("cpu0 1 2 3 4\n") is None
    assert machine.parse_proc_stat("cpu  a b c d\n") is None
    # a name with spaces and a parenthesis; utime 11 stime 22 cutime 33 cstime 44
    pid_stat = "42 (my (odd) name) R 1 42 42 0 -1 4194304 100 0 0 0 11 22 33 44 20 0 1 0 5 1000 50"
    assert machine.parse_pid_stat(pid_stat) == 110
    assert machine.parse_pid_stat("garbage") is None
    assert machine.parse_cpuinfo_mhz("cpu MHz\t\t: 2000.0\nx\ncpu MHz\t\t: 3000.5\n") == 2500.2
    assert machine.parse_cpuinfo_mhz("processor: 0\n") is None
    assert machine.other_share(machine.CpuTimes(0, 0), machine.CpuTimes(150, 200), 0.0, 0.5) == 0.5  # 100 Hz
    assert machine.other_share(machine.CpuTimes(0, 0), machine.CpuTimes(10, 200), 0.0, 0.5) == 0.0  # clamped
    assert machine.other_share(machine.CpuTimes(0, 0), machine.CpuTimes(0, 0), 0.0, 0.0) is None
    assert machine.other_share(None, machine.CpuTimes(0, 0), 0.0, 0.0) is None


# --- CUDA, mocked (no GPU here) ------------------------------------------------------------------------------

@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(machine, "_gpu_id", lambda device: "GPU-abc")
    monkeypatch.setattr(machine, "_has_cuda_context", lambda: True)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError


def test_cuda_through_nvidia_smi(monkeypatch, fake_gpu):
    calls = []

    def fake_run(args, **kwargs):
        calls.append(args)
        assert kwargs["timeout"] == machine.SMI_TIMEOUT_S and "--id=GPU-abc" in args
        out = (f"{os.getpid()}\n4321\n" if "--query-compute-apps=pid" in args else "550.54.15, 1755, 1980, 41\n")
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(machine.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(machine.subprocess, "run", fake_run)
    env = MachineWatch.start("cuda:0").stop()
    assert {k: env[k] for k in GPU_KEYS} == {"gpu_driver": "550.54.15", "gpu_sm_clock_mhz": 1755,
                                             "gpu_max_sm_clock_mhz": 1980, "gpu_temperature_c": 41,
                                             "gpu_other_processes": 1}
    assert len(calls) == 2


def test_cuda_through_pynvml(monkeypatch, fake_gpu):
    fake = types.SimpleNamespace(
        NVML_CLOCK_SM=1, NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: ("handle", uuid),
        nvmlSystemGetDriverVersion=lambda: b"535.104.05",
        nvmlDeviceGetClockInfo=lambda h, clock: 1410,
        nvmlDeviceGetMaxClockInfo=lambda h, clock: 1980,
        nvmlDeviceGetTemperature=lambda h, sensor: 63,
        nvmlDeviceGetComputeProcesses=lambda h: [types.SimpleNamespace(pid=p) for p in (os.getpid(), 7, 8)],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(machine.shutil, "which", lambda name: pytest.fail("nvidia-smi asked although pynvml answered"))
    assert machine.gpu_state("cuda:0") == {"gpu_driver": "535.104.05", "gpu_sm_clock_mhz": 1410,
                                           "gpu_max_sm_clock_mhz": 1980, "gpu_temperature_c": 63,
                                           "gpu_other_processes": 2}

    def refuse(h):
        raise RuntimeError("NVML_ERROR_NO_PERMISSION")

    monkeypatch.setattr(fake, "nvmlDeviceGetComputeProcesses", refuse)  # one field unread, the rest stay
    state = machine.gpu_state("cuda:0")
    assert state["gpu_other_processes"] is None and state["gpu_temperature_c"] == 63


def test_cuda_without_tools_gives_none(monkeypatch, fake_gpu):
    monkeypatch.setattr(machine.shutil, "which", lambda name: None)
    assert machine.gpu_state("cuda") == dict.fromkeys(GPU_KEYS)

    def hang(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    monkeypatch.setattr(machine.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(machine.subprocess, "run", hang)
    assert machine.gpu_state("cuda:1") == dict.fromkeys(GPU_KEYS)
    monkeypatch.setattr(machine.subprocess, "run",
                        lambda args, **kw: subprocess.CompletedProcess(args, 0, stdout="[N/A], [N/A]\n", stderr=""))
    assert machine.gpu_state("cuda:1") == dict.fromkeys(GPU_KEYS)


def test_gpu_process_count_in_a_container():
    assert machine.count_other_gpu_processes([10, 11, 12], own_pid=10, own_context=True) == 2
    # inside a PID namespace the driver lists host PIDs: one of them is this process
    assert machine.count_other_gpu_processes([5001, 5002], own_pid=10, own_context=True) == 1
    assert machine.count_other_gpu_processes([5001, 5002], own_pid=10, own_context=False) == 2
    assert machine.count_other_gpu_processes([], own_pid=10, own_context=True) == 0


# --- the device a row names ----------------------------------------------------------------------------------

def test_a_parent_without_a_cuda_context_names_the_gpu_through_nvidia_smi(monkeypatch):
    """A crashed run's row is made in the parent, which must not create a CUDA context: nvidia-smi names the GPU
    that CUDA_VISIBLE_DEVICES maps torch's index to, as torch would."""
    monkeypatch.setattr(machine, "_has_cuda_context", lambda: False)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    asked = []

    def fake_run(args, **kwargs):
        asked.append(args[1:])
        return subprocess.CompletedProcess(args, 0, stdout="NVIDIA H200\n", stderr="")

    monkeypatch.setattr(machine.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(machine.subprocess, "run", fake_run)
    assert machine.device_name("cuda:1") == "NVIDIA H200"
    assert asked == [["--id=1", "--query-gpu=name", "--format=csv,noheader"]]


def test_without_nvml_or_nvidia_smi_the_gpu_is_called_cuda(monkeypatch):
    monkeypatch.setattr(machine, "_has_cuda_context", lambda: False)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(machine.shutil, "which", lambda name: None)
    assert machine.device_name("cuda") == "cuda"
    assert machine.device_name("cpu") == "cpu"


def test_a_failure_row_is_named_as_its_ok_rows(monkeypatch, tiny_file):
    """The same name in env.device_name, so report, compare and recommend put it in its ok rows' section."""
    from lstmbench.run.worker import failure_record
    from lstmbench.suite.load import load_suite

    suite = load_suite(tiny_file)
    monkeypatch.setattr(machine, "device_name", lambda device: "NVIDIA H200")
    row = failure_record(suite, suite.strategies[0], 0, "cuda", "crashed", "died")
    assert (row.device, row.env["device_name"]) == ("cuda", "NVIDIA H200")
    monkeypatch.undo()
    if not torch.cuda.is_available():  # auto is the CPU here
        row = failure_record(suite, suite.strategies[0], 0, "auto", "crashed", "died")
        assert (row.device, row.env["device_name"]) == ("cpu", "cpu")
