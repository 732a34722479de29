"""The GPU check's probes (scripts/gpu-check.sh runs this): one JSON object on stdout.

- syncs: host synchronisations inside one training step, per readout x amp, counted by CUDA's sync-debug mode
  (warn) on a batch collated, pinned and moved as the timed loop moves it; 0 is the aim, fp16's GradScaler
  keeps 1 (found_inf.item())
- lstm_dtype: what the kernel probe saw cuDNN's LSTM run in, per amp
- bf16_lstm_outside_autocast: whether cuDNN runs a bf16 LSTM at all (weights and input cast, no autocast)
- events: StepTimer's event times of torch.cuda._sleep steps against their synchronised duration
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from lstmbench.data.make import make_data
from lstmbench.measure.loop import train_step
from lstmbench.measure.model import Precision, model_for
from lstmbench.measure.probes import KernelProbe, host_syncs
from lstmbench.measure.timing import StepTimer
from lstmbench.strategies.loader import Pinnable, to_device
from lstmbench.strategies.strategy import Strategy
from lstmbench.suite.config import DataConfig, Lengths, ModelConfig, StrategySpec

READOUTS = {"naive": ("random", "global", "last"), "mask": ("random", "batch", "mask"),
            "pack": ("random", "batch", "pack"), "sorted_pack": ("random", "batch", "pack_sorted"),
            "truncate": ("random", "truncate", "mask"), "bucket": ("bucket", "batch", "pack")}


def syncs_per_step(bidirectional: bool, amp: str) -> dict[str, int]:
    cuda = torch.device("cuda")
    cfg = DataConfig(source="synthetic", task="classify", train_size=256, eval_size=32, vocab_size=64,
                     lengths=Lengths(dist="lognormal", median=40, sigma=0.8, min=4, max=200))
    data = make_data(cfg, seed=0).train
    out = {}
    for name, (batching, padding, readout) in READOUTS.items():
        model = model_for(ModelConfig(embed_dim=32, hidden_size=64, bidirectional=bidirectional), data, 0).to(cuda)
        strategy = Strategy(StrategySpec(name=name, batching=batching, padding=padding, readout=readout,
                                         max_len=64 if padding == "truncate" else 0))
        batch = to_device(Pinnable(strategy.collate(data, np.arange(32))).pin_memory().batch, cuda)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        precision = Precision("cuda", amp, _dtype(model, batch, readout, amp))
        train_step(model, optimizer, batch, readout, precision)
        torch.cuda.synchronize()
        out[name] = len(host_syncs(lambda: train_step(model, optimizer, batch, readout, precision)))
        torch.cuda.synchronize()
    return out


def _dtype(model: torch.nn.Module, batch, readout: str, amp: str) -> str:
    with KernelProbe() as probe, Precision("cuda", amp).autocast():
        model(batch.tokens, batch.lengths, readout, batch.lengths_on_device)
    return probe.dtype


def bf16_lstm_outside_autocast() -> dict[str, object]:
    """Whether cuDNN runs an LSTM whose weights and input are bf16 (no autocast): the way to a true bf16 run."""
    lstm = torch.nn.LSTM(16, 16, batch_first=True).cuda().to(torch.bfloat16)
    x = torch.randn(4, 9, 16, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    try:
        with KernelProbe() as probe:
            lstm(x)[0].float().sum().backward()
        return {"ran": True, "kernel": probe.kernel, "dtype": probe.dtype}
    except RuntimeError as e:
        return {"ran": False, "error": " ".join(str(e).split())[:200]}


def event_timing() -> dict[str, float]:
    cycles = 2_000_000
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    each = (time.perf_counter() - t0) / 50
    timer = StepTimer(torch.device("cuda"))
    with timer.segment():
        for _ in range(20):
            start = timer.mark()
            torch.cuda._sleep(cycles)
            timer.step(start, timer.mark())
    times = timer.step_times()
    return {"sleep_s_synchronised": each, "event_median_s": float(np.median(times)),
            "event_max_rel_error": float(max(abs(t - each) / each for t in times)),
            "segment_wall_s": timer.segment_times()[0][1], "steps": len(times)}


def main() -> None:
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "syncs_per_step": {}, "lstm_dtype": {}}
    for amp in ("none", "bf16", "fp16"):
        for bidirectional in (False, True):
            key = f"{amp}{'-bidirectional' if bidirectional else ''}"
            result["syncs_per_step"][key] = syncs_per_step(bidirectional, amp)
        model = model_for(ModelConfig(embed_dim=8, hidden_size=16), make_data(
            DataConfig(train_size=16, eval_size=8), seed=0).train, 0).cuda()
        with KernelProbe() as probe, Precision("cuda", amp).autocast():
            model(torch.randint(1, 8, (4, 9), device="cuda"), torch.full((4,), 9), "last")
        result["lstm_dtype"][amp] = probe.dtype
    result["bf16_lstm_outside_autocast"] = bf16_lstm_outside_autocast()
    result["events"] = event_timing()
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
