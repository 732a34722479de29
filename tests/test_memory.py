"""Probes, memory: what a training step's tensors take (counted, on any CPU), the process peak without the
evaluations, and getrusage's units."""
from __future__ import annotations

import resource
import types

import numpy as np
import pytest
import torch

from lstmbench.data.make import make_data
from lstmbench.measure import probes
from lstmbench.measure.loop import SEAMS
from lstmbench.measure.model import model_for
from lstmbench.measure.probes import TensorMemory
from lstmbench.measure.train import Precision, run_one, step_memory_bytes
from lstmbench.strategies.strategy import Strategy
from lstmbench.suite.load import load_suite
from tests.conftest import TINY, write_suite

CPU = torch.device("cpu")


def test_tensor_memory_counts_storages_once_until_freed():
    with TensorMemory() as memory:
        a = torch.zeros(1000)  # 4,000 bytes
        view, same = a[10:], a.add_(1)  # a view and an in-place result share a's storage
        b = torch.ones(500, dtype=torch.float64)  # 4,000 more
        assert memory.live == 8000 and memory.peak == 8000
        del b
        assert memory.live == 4000
        c = torch.ones(250)  # 1,000
    assert (memory.live, memory.peak) == (5000, 8000)
    memory.hold([a, view, same, c, "not a tensor", None])  # already counted: nothing added
    assert memory.live == 5000
    del a, view, same
    assert memory.live == 1000  # the storage went when its last holder did


def test_autograd_saved_tensors_are_counted_until_backward():
    x = torch.randn(64, 32, requires_grad=True)
    with TensorMemory() as memory:
        memory.hold([x])
        y = torch.tanh(x)  # tanh keeps its output for the backward pass
        loss = (y * 2).sum()
        del y
        held = memory.live
        loss.backward()
    assert held >= 2 * 64 * 32 * 4  # x and tanh's saved output, though no Python name holds the latter
    assert memory.peak >= held


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return load_suite(write_suite(tmp_path_factory.mktemp("m"), TINY))


def _step_bytes(suite, strategy: Strategy, idx: np.ndarray) -> int:
    data = make_data(suite.data, 0).train
    model = model_for(suite.model, data, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return step_memory_bytes(model, optimizer, strategy, data, idx, Precision("cpu", "none"))


def test_a_strictly_larger_batch_never_takes_less_training_memory(suite):
    """Longer padding, then more sequences: a strategy's counted step memory grows strictly with its batch."""
    data = make_data(suite.data, 0).train
    order = np.argsort(data.lengths, kind="stable")
    short, long = order[:8], np.concatenate([order[:7], order[-1:]])  # the same but one, which is the longest
    wider = np.concatenate([long, order[8:16]])
    for name in ("mask", "pack", "naive"):
        strategy = Strategy(next(s for s in suite.strategies if s.name == name))
        shapes = [strategy.shape(data, idx) for idx in (short, long, wider)]
        sizes = [_step_bytes(suite, strategy, idx) for idx in (short, long, wider)]
        assert sizes[0] > 0
        for (a, b), (m, n) in zip(zip(shapes, shapes[1:]), zip(sizes, sizes[1:])):
            assert (n == m) if a == b else (n > m), (name, shapes, sizes)  # one shape, one figure; larger, more
    assert shapes[0] == shapes[1]  # naive pads every batch to the longest sequence of all: the same shape


def test_step_memory_leaves_the_run_model_as_it_was(suite):
    data = make_data(suite.data, 0).train
    model = model_for(suite.model, data, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step_memory_bytes(model, optimizer, Strategy(suite.strategies[2]), data, np.arange(8), Precision("cpu", "none"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not optimizer.state


def test_a_run_with_strictly_larger_batches_never_reports_less(tmp_path):
    """Same data, same model, same readout: every batch of `naive` holds truncate's batch and more, and every
    batch of `mask-pad16` mask's; their training memory is at least as large. Packing computes no padding and
    takes the least."""
    strategies = ["naive", {"truncate": {"max_len": 6}}, "mask", "pack",
                  {"name": "mask-pad16", "batching": "random", "padding": "batch", "readout": "mask",
                   "pad_multiple": 16}]
    suite = load_suite(write_suite(tmp_path, {**TINY, "strategies": strategies}))
    mem = {spec.name: run_one(suite, spec, 0, CPU).train_mem_bytes for spec in suite.strategies}
    assert mem["naive"] > mem["truncate"] > 0 and mem["mask-pad16"] > mem["mask"] > mem["pack"] > 0, mem


def test_evaluations_stay_out_of_the_training_peak(tmp_path, monkeypatch):
    """An evaluation that touches 256 MiB between segments must not show in the run's peak."""
    hog = 256 * 2**20
    suite = load_suite(write_suite(tmp_path, {**TINY, "train": {**TINY["train"], "eval_every": 3}}))

    def evaluate(model, strategy, data, *args, per_example=False):
        torch.ones(hog // 4)  # allocated and written: resident
        return (0.5, 0.7, np.ones(len(data), dtype=np.int64)) if per_example else (0.5, 0.7)

    monkeypatch.setattr(SEAMS, "evaluate", evaluate)
    spec = next(s for s in suite.strategies if s.name == "mask")
    r = run_one(suite, spec, 0, CPU)
    assert r.peak_mem_bytes - r.baseline_rss_bytes < hog / 2
    assert r.train_mem_bytes < 2**20  # a tiny model's step: well under a MiB


def test_getrusage_units(monkeypatch):
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=1000))
    monkeypatch.setattr(probes.sys, "platform", "darwin")
    assert probes.max_rss_bytes() == 1000  # bytes on macOS
    monkeypatch.setattr(probes.sys, "platform", "linux")
    assert probes.max_rss_bytes() == 1000 * 1024  # KiB on Linux
