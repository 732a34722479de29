"""Stage 5, the timed step: nothing inside it moves a tensor to the device or reads one back to the host.

On CUDA either is a blocking copy (from pageable memory) or a stream synchronisation, and it would make some
strategies wait for the GPU in every step while others run ahead. Everything the readout and packing need is
built on the CPU in collate and travels with the tokens. On a CPU the calls are no-ops, so they are recorded
(a TorchFunctionMode sees every Tensor method called from Python, torch's own pack_padded_sequence included);
on CUDA, `torch.cuda.set_sync_debug_mode("error")` checks the same (skipped without a GPU).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from lstmbench.data.make import make_data
from lstmbench.measure.evaluation import evaluate
from lstmbench.measure.loop import train_step
from lstmbench.measure.model import Precision, model_for
from lstmbench.strategies.strategy import Strategy
from lstmbench.suite.config import DataConfig, Lengths, ModelConfig, StrategySpec

# every way a step can reach a device or the host: a move, a copy, a read of a value
MOVES = {"to", "cuda", "cpu", "copy_", "pin_memory", "item", "tolist", "numpy", "__bool__", "__int__",
         "__float__", "__index__", "nonzero"}
READOUTS = [("naive", "random", "global", "last"), ("mask", "random", "batch", "mask"),
            ("pack", "random", "batch", "pack"), ("sorted_pack", "random", "batch", "pack_sorted"),
            ("truncate", "random", "truncate", "mask"), ("bucket", "bucket", "batch", "pack")]


class Moves(TorchFunctionMode):
    """Records the moves and host reads called on tensors inside the block, with where they came from.
    `host`: tensors that live on the host by design (Adam's step counters, which torch reads with .item())."""

    def __init__(self, host: list[torch.Tensor] = ()) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.host = {id(t) for t in host}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        on_host = bool(args) and id(args[0]) in self.host
        if name in MOVES and not on_host and not _dtype_only(name, args, kwargs or {}):
            import traceback

            where = next((f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(traceback.extract_stack())
                          if "test_step_path" not in f.filename and "overrides" not in f.filename), "?")
            self.calls.append(f"{name} at {where}")
        return func(*args, **(kwargs or {}))


def _dtype_only(name: str, args: tuple, kwargs: dict) -> bool:
    """x.to(dtype) changes no device: allowed."""
    return name == "to" and not kwargs.get("device") and all(isinstance(a, torch.dtype) for a in args[1:])


def _setup(task: str, bidirectional: bool, features: bool = False):
    cfg = DataConfig(source="synthetic", task=task, train_size=64, eval_size=32, vocab_size=12,
                     lengths=Lengths(dist="lognormal", median=8, sigma=0.8, min=2, max=30))
    splits = make_data(cfg, seed=0)
    model = model_for(ModelConfig(embed_dim=6, hidden_size=8, bidirectional=bidirectional), splits.train, seed=0)
    return splits, model


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("task", ["classify", "tag"])
@pytest.mark.parametrize("name,batching,padding,readout", READOUTS)
def test_a_training_step_moves_nothing_itself(name, batching, padding, readout, task, bidirectional):
    splits, model = _setup(task, bidirectional)
    spec = StrategySpec(name=name, batching=batching, padding=padding, readout=readout,
                        max_len=6 if padding == "truncate" else 0)
    strategy = Strategy(spec)
    idx = np.arange(16)
    batch = strategy.collate(splits.train, idx)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, optimizer, batch, readout, Precision("cpu", "none"))  # the first step creates Adam's state
    with Moves(host=[state["step"] for state in optimizer.state.values()]) as moves:
        loss = train_step(model, optimizer, batch, readout, Precision("cpu", "none"))
    assert moves.calls == []
    assert torch.isfinite(loss.detach())


def test_packing_sorts_in_collate_and_evaluation_keeps_each_example_its_own_hits():
    """Rows of a packed batch come longest first, labels with them; per-example hits still land on their own
    example (the evaluation order follows the rows)."""
    splits, model = _setup("classify", False)
    pack = Strategy(StrategySpec(name="pack", batching="random", padding="batch", readout="pack"))
    mask = Strategy(StrategySpec(name="mask", batching="random", padding="batch", readout="mask"))
    idx = np.arange(10)
    batch = pack.collate(splits.train, idx)
    assert list(batch.lengths) == sorted(splits.train.lengths[idx], reverse=True)
    order = pack.row_order(splits.train, idx)
    assert list(batch.labels) == list(splits.train.labels[order])
    cpu = torch.device("cpu")
    _, _, packed_hits = evaluate(model, pack, splits.eval, 8, cpu, per_example=True)
    _, _, masked_hits = evaluate(model, mask, splits.eval, 8, cpu, per_example=True)
    assert np.array_equal(packed_hits, masked_hits)  # both exact: the same prediction for every example


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name,batching,padding,readout", READOUTS)
def test_a_cuda_step_synchronises_only_for_its_loss_scaler(name, batching, padding, readout, bidirectional, amp):
    """CUDA's sync-debug mode counts every synchronising call of one step, the batch pinned and moved as the timed
    loop moves it: none, except GradScaler.step's found_inf.item() where the loss is scaled (fp16, and bf16,
    whose cuDNN LSTM autocast runs in fp16: the probe says which)."""
    from lstmbench.measure.probes import host_syncs
    from lstmbench.measure.setup import probe_kernel
    from lstmbench.strategies.loader import Pinnable, to_device

    splits, model = _setup("classify", bidirectional)
    device = torch.device("cuda")
    model.to(device)
    strategy = Strategy(StrategySpec(name=name, batching=batching, padding=padding, readout=readout,
                                     max_len=6 if padding == "truncate" else 0))
    idx = np.arange(16)
    _, lstm_dtype = probe_kernel(model, strategy, splits.train, idx, device, Precision("cuda", amp))
    precision = Precision("cuda", amp, lstm_dtype)
    batch = to_device(Pinnable(strategy.collate(splits.train, idx)).pin_memory().batch, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, optimizer, batch, readout, precision)
    torch.cuda.synchronize()
    syncs = host_syncs(lambda: train_step(model, optimizer, batch, readout, precision))
    torch.cuda.synchronize()
    assert len(syncs) == (1 if precision.scaler else 0), syncs
