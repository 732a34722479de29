"""The device path: precision, cuDNN and compile options, out-of-memory rows. CUDA-only checks skip on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.measure.probes import cpu_bf16_lstm, resolve_device
from lstmbench.measure.train import run_one
from lstmbench.run.worker import run_inline
from lstmbench.suite.load import load_suite

CPU = torch.device("cpu")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_resolves_to_what_torch_sees():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(not cpu_bf16_lstm(), reason="this CPU has no bf16 LSTM in oneDNN (see the next test)")
def test_bf16_autocast_runs_and_is_recorded(tiny_file):
    suite = load_suite(tiny_file, ["train.amp=bf16"])
    r = run_one(suite, suite.strategies[2], 0, CPU)
    assert (r.status, r.amp, r.cudnn_benchmark, r.compiled) == ("ok", "bf16", True, False)
    assert np.isfinite(r.final_loss) and 0 <= r.eval_accuracy <= 1


@pytest.mark.skipif(cpu_bf16_lstm(), reason="this CPU runs bf16 LSTMs (see the previous test)")
def test_bf16_on_a_cpu_without_it_is_refused_before_any_run(tiny_file, tmp_path):
    r = CliRunner().invoke(main, ["run", str(tiny_file), "--set", "train.amp=bf16", "--device", "cpu",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 2 and not list(tmp_path.rglob("*.jsonl"))
    assert r.stderr == (f"Error: {tiny_file}: train.amp: bf16 on this CPU: oneDNN has no bf16 LSTM here (the CPU "
                        "lacks avx512_bf16 and AMX); use none, or run on a CPU or GPU with bf16\n")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_fp16_needs_cuda(tiny_file, tmp_path):
    r = CliRunner().invoke(main, ["run", str(tiny_file), "--set", "train.amp=fp16", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert r.stderr == (f"Error: {tiny_file}: train.amp: fp16 needs a CUDA device, and this suite runs on cpu; "
                        "use bf16 or none\n")


def test_compile_option_trains_through_torch_compile(tiny_file, monkeypatch):
    compiled = []

    def fake_compile(module, **kwargs):  # the real one needs minutes of compilation on this CPU
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    suite = load_suite(tiny_file, ["train.compile=true"])
    r = run_one(suite, suite.strategies[2], 0, CPU)
    assert r.compiled is True and len(compiled) == 1


def test_a_simulated_out_of_memory_is_an_oom_row_with_the_batch_shape(tiny_file, monkeypatch):
    from lstmbench.measure.loop import SEAMS

    real_step, calls = SEAMS.step, []

    def step(net, optimizer, batch, readout, precision, scale=None):
        calls.append(tuple(batch.tokens.shape))
        if len(calls) == 5:  # two warm-up steps, then the third timed step
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(net, optimizer, batch, readout, precision, scale)

    monkeypatch.setattr(SEAMS, "step", step)
    suite = load_suite(tiny_file, ["seeds=[0]"])
    mask = suite.strategies[2]
    r = run_inline(suite, mask, 0, "cpu")
    assert r.status == "oom" and r.tokens_per_s is None
    assert r.error.startswith("out of memory at step ")
    assert r.error.endswith(f" on a batch of shape {calls[-1]}: CUDA out of memory. Tried to allocate 20.00 GiB")


def test_an_oom_row_lets_the_suite_go_on(tiny_file, monkeypatch, tmp_path):
    from lstmbench.measure.loop import SEAMS

    real_step = SEAMS.step

    def step(net, optimizer, batch, readout, precision, scale=None):
        if readout == "pack":
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real_step(net, optimizer, batch, readout, precision, scale)

    monkeypatch.setattr(SEAMS, "step", step)
    r = CliRunner().invoke(main, ["run", str(tiny_file), "--inline", "--out", str(tmp_path), "--set", "seeds=[0]"])
    assert r.exit_code == 1
    assert "  pack seed 0: oom: out of memory at step -" in r.stderr  # a warm-up step: negative numbers
    assert "  mask seed 0: " in r.stderr and r.stderr.endswith("Error: 2 of 6 runs failed; their rows carry "
                                                               "the status and error.\n")


@cuda_only
def test_cuda_run_uses_cudnn_and_records_both_peaks(tiny_file):
    suite = load_suite(tiny_file, ["device=cuda", "train.amp=bf16"])
    r = run_one(suite, suite.strategies[2], 0, torch.device("cuda"))
    assert r.status == "ok" and r.device == "cuda" and r.lstm_kernel == "cudnn"
    assert 0 < r.peak_mem_bytes <= r.peak_mem_reserved_bytes
    assert r.env["device_name"] == torch.cuda.get_device_name()
