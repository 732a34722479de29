"""The GPU path, on a GPU (every test skipped without one; `scripts/gpu-check.sh` runs them on a lent machine).

Event timing against steps of known length, the dtype cuDNN's LSTM really runs in under each amp, the unpadded
reference timed as the run (efficiency at most 1.05 where nothing is padded), and an out-of-memory row named
as its ok rows. The step's synchronisation is checked in tests/test_step_path.py (sync-debug mode).
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from lstmbench.measure.model import Precision, build_model
from lstmbench.measure.probes import KernelProbe
from lstmbench.measure.timing import StepTimer
from lstmbench.suite.load import ModelConfig, suite_from_dict
from tests.conftest import TINY, write_suite

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def test_events_time_steps_of_known_length_without_synchronising():
    """Steps of torch.cuda._sleep(cycles), queued with no synchronisation between them: each event-timed step is
    the sleep's own duration (calibrated with a synchronised clock over many sleeps), within 10%."""
    cycles = 2_000_000
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize()
    each = start.elapsed_time(end) / 1000 / 20
    timer = StepTimer(CUDA)
    with timer.segment():
        for _ in range(10):
            t0 = timer.mark()
            torch.cuda._sleep(cycles)
            timer.step(t0, timer.mark())
    times = timer.step_times()
    assert len(times) == 10 and all(abs(t - each) / each < 0.1 for t in times), (each, times)
    wall = timer.segment_times()[0][1]
    assert 10 * each * 0.9 < wall < 10 * each * 1.5


@pytest.mark.parametrize("amp, expected", [("none", "float32"), ("bf16", "float16"), ("fp16", "float16")])
def test_the_lstm_dtype_is_what_cudnn_ran(amp, expected):
    """torch's autocast wrapper for _cudnn_rnn casts to float16 under bf16 autocast too: the probe says so, and the
    run then scales its loss (Precision) and labels itself fp16."""
    model = build_model(ModelConfig(embed_dim=8, hidden_size=16), 12, 2, seed=0).to(CUDA)
    precision = Precision("cuda", amp)
    with KernelProbe() as probe, precision.autocast():
        model(torch.randint(1, 12, (4, 9), device=CUDA), torch.full((4,), 9), "last")
    assert (probe.kernel, probe.dtype) == ("cudnn", expected)
    scaled = Precision("cuda", amp, probe.dtype)
    assert (scaled.scaler is not None) == (expected == "float16")
    assert scaled.label == ("none" if amp == "none" else "fp16")


def test_efficiency_is_at_most_1_05_where_nothing_is_padded():
    """Every sequence of one length: the run's batches are its unpadded reference's, through the same pinned
    workers and the same event timing, so efficiency is 1 within noise (it was inflated when the reference
    synchronised every step and collated in the training process)."""
    from lstmbench.measure.train import run_one

    raw = copy.deepcopy(TINY)
    raw.update(device="cuda", seeds=[0], strategies=["mask"])
    raw["data"].update(train_size=4096, eval_size=256, lengths={"dist": "fixed", "length": 64})
    raw["model"].update(embed_dim=64, hidden_size=256)
    raw["train"].update(batch_size=64, epochs=1, warmup_steps=4,
                        loader={"workers": 2, "pin_memory": True, "prefetch_factor": 4})
    suite = suite_from_dict(raw)
    row = run_one(suite, suite.strategies[0], 0, CUDA)
    assert row.pad_fraction == 0 and row.lstm_kernel == "cudnn"
    assert 0.8 <= row.efficiency <= 1.05, row.efficiency


def test_an_out_of_memory_row_names_the_gpu_as_its_ok_rows(tmp_path):
    """Through `lstmbench run` (the forkserver): a batch far beyond the GPU's memory is an `oom` row, and its device
    is the GPU's name, not 'cuda'."""
    raw = copy.deepcopy(TINY)
    raw.update(device="cuda", seeds=[0], strategies=["naive"])
    raw["data"].update(train_size=8192, eval_size=64, lengths={"dist": "fixed", "length": 2000})
    raw["model"].update(embed_dim=1024, hidden_size=8192)
    raw["train"].update(batch_size=8192, epochs=1, warmup_steps=1)
    suite = write_suite(tmp_path, raw)
    r = subprocess.run([sys.executable, "-m", "lstmbench", "run", str(suite), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for f in (tmp_path / "out").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert r.returncode == 1 and [row["status"] for row in rows] == ["oom"], r.stderr
    assert rows[0]["env"]["device_name"] == torch.cuda.get_device_name(0) and rows[0]["device"] == "cuda"


def test_a_copy_of_a_cuda_model_keeps_cudnns_flat_weights():
    """copy_model flattens the copy's LSTM weights again: no re-compaction (and its warning) at each call."""
    import warnings

    from lstmbench.measure.reference import copy_model

    model = build_model(ModelConfig(embed_dim=8, hidden_size=16), 12, 2, seed=0).to(CUDA)
    twin = copy_model(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        twin(torch.randint(1, 12, (2, 5), device=CUDA), torch.full((2,), 5), "last")
    assert not [w for w in caught if "contiguous" in str(w.message)]
