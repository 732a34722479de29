"""The DataLoader input pipeline yields exactly the in-process batches, and its config keeps old hashes."""
from __future__ import annotations

import copy
import multiprocessing as mp

import numpy as np
import pytest
import torch

from lstmbench.data.make import make_data
from lstmbench.errors import SuiteError
from lstmbench.measure.loop import train_step
from lstmbench.measure.model import Precision, model_for
from lstmbench.strategies.loader import batches, row_fields
from lstmbench.strategies.ranks import plan_ranks
from lstmbench.strategies.strategy import Strategy
from lstmbench.suite.load import LoaderConfig, load_suite, suite_from_dict
from tests.conftest import TINY, write_suite

CPU = torch.device("cpu")
TINY_HASH = "dea5833349c5"  # tests/conftest.py's TINY, hashed before `train.loader` existed


def _setup(task: str = "classify", seed: int = 0):
    raw = copy.deepcopy(TINY)
    raw["data"]["task"] = task
    raw["strategies"] = raw["strategies"] + ["sorted_pack"]  # its collate reorders the batch
    suite = suite_from_dict(raw)
    return suite, make_data(suite.data, seed, suite.origin).train


def _plan(strategy: Strategy, train, epochs: int = 1) -> list[np.ndarray]:
    return [step[0] for step in plan_ranks(strategy, train, 16, epochs, 0, 1)]


def _same(a, b) -> bool:
    tensors = all(torch.equal(getattr(a, k), getattr(b, k)) and getattr(a, k).dtype == getattr(b, k).dtype
                  for k in ("tokens", "lengths", "labels"))
    return tensors and (a.real_tokens, a.padded_tokens) == (b.real_tokens, b.padded_tokens)


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_workers_yield_exactly_the_in_process_batches(task):
    suite, train = _setup(task)
    for spec in suite.strategies:
        strategy = Strategy(spec)
        plan = _plan(strategy, train, epochs=2)
        here = list(batches(strategy, train, plan, CPU, LoaderConfig()))
        there = list(batches(strategy, train, plan, CPU, LoaderConfig(workers=2, pin_memory=True)))
        assert len(here) == len(there) == len(plan), spec.name
        for step, ((a, _), (b, _)) in enumerate(zip(here, there)):
            assert _same(a, strategy.collate(train, plan[step])), (spec.name, step)
            assert _same(a, b), (spec.name, step)
        for waits in ([w for _, w in here], [w for _, w in there]):
            assert all(isinstance(w, float) and w >= 0.0 for w in waits)


@pytest.mark.parametrize("name", ["naive", "truncate", "mask", "pack", "bucket"])
def test_training_on_either_path_gives_identical_losses(name):
    suite, train = _setup()
    spec = next(s for s in suite.strategies if s.name == name)
    strategy = Strategy(spec)
    plan = _plan(strategy, train)[:4]
    model = model_for(suite.model, train, 0)
    losses = []
    for cfg in (LoaderConfig(), LoaderConfig(workers=2, prefetch_factor=1)):
        net = copy.deepcopy(model)
        optimizer = torch.optim.Adam(net.parameters(), lr=suite.train.lr)
        precision = Precision("cpu", "none")
        losses.append([train_step(net, optimizer, batch, strategy.readout, precision).item()
                       for batch, _ in batches(strategy, train, plan, CPU, cfg)])
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_closing_early_ends_the_workers():
    suite, train = _setup()
    strategy = Strategy(suite.strategies[0])
    plan = _plan(strategy, train)
    stream = batches(strategy, train, plan, CPU, LoaderConfig(workers=2))
    next(stream)
    assert len(mp.active_children()) >= 2
    stream.close()
    assert mp.active_children() == []
    assert list(batches(strategy, train, [], CPU, LoaderConfig(workers=2))) == []


def test_row_fields():
    assert row_fields(LoaderConfig(workers=2, pin_memory=True)) == {
        "loader_workers": 2, "loader_pin_memory": True, "loader_prefetch_factor": 2}


def test_the_default_loader_leaves_the_hash_alone(tmp_path):
    base = suite_from_dict(TINY)
    assert base.hash == TINY_HASH and base.train.loader == LoaderConfig()
    raw = copy.deepcopy(TINY)
    raw["train"]["loader"] = {"workers": 0, "pin_memory": False, "prefetch_factor": 2}
    assert suite_from_dict(raw).hash == TINY_HASH
    assert "loader" not in base.to_dict()["train"]
    raw["train"]["loader"] = {"workers": 2}
    changed = suite_from_dict(raw)
    assert changed.train.loader == LoaderConfig(workers=2) and changed.hash != TINY_HASH
    assert suite_from_dict(changed.to_dict()).hash == changed.hash  # a row's suite reads back the same
    path = write_suite(tmp_path, raw)
    assert load_suite(path).hash == changed.hash
    over = load_suite(write_suite(tmp_path, TINY, "t.yaml"), ["train.loader.workers=2"])
    assert over.train.loader.workers == 2 and over.hash == changed.hash


@pytest.mark.parametrize("loader, message", [
    ({"workers": -1}, "s.yaml: train.loader.workers: must be >= 0, got -1"),
    ({"prefetch_factor": 0}, "s.yaml: train.loader.prefetch_factor: must be > 0, got 0"),
    ({"worker": 2}, "s.yaml: train.loader.worker: unknown key (did you mean 'workers'?); valid: pin_memory, "
                    "prefetch_factor, workers"),
    ({"pin_memory": "yes"}, "s.yaml: train.loader.pin_memory: must be true or false, got 'yes'"),
    (4, "s.yaml: train.loader: must be a mapping, got int"),
])
def test_bad_loader_gives_one_exact_sentence(tmp_path, loader, message):
    raw = copy.deepcopy(TINY)
    raw["train"]["loader"] = loader
    path = write_suite(tmp_path, raw, "s.yaml")
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    assert str(e.value).replace(str(path), "s.yaml") == message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_batches_reach_the_gpu_unchanged():
    suite, train = _setup()
    cuda = torch.device("cuda")
    for spec in suite.strategies:
        strategy = Strategy(spec)
        plan = _plan(strategy, train)
        here = [b for b, _ in batches(strategy, train, plan, cuda, LoaderConfig())]
        there = [b for b, _ in batches(strategy, train, plan, cuda, LoaderConfig(workers=2, pin_memory=True))]
        for a, b in zip(here, there, strict=True):
            assert b.tokens.is_cuda and b.labels.is_cuda and not b.lengths.is_cuda
            assert _same(a, b), spec.name


def test_a_run_through_the_loader_trains_as_the_in_process_path(tmp_path):
    """The same run, batches from 2 DataLoader workers: the same losses and accuracy; the row says how it was fed."""
    import copy as _copy

    from lstmbench.measure.train import run_one
    from lstmbench.suite.load import suite_from_dict
    from tests.conftest import TINY

    raw = _copy.deepcopy(TINY)
    raw["strategies"] = ["mask"]
    plain = suite_from_dict(raw)
    raw["train"]["loader"] = {"workers": 2}
    loaded = suite_from_dict(raw)
    a = run_one(plain, plain.strategies[0], 0, torch.device("cpu"))
    b = run_one(loaded, loaded.strategies[0], 0, torch.device("cpu"))
    assert a.final_loss == b.final_loss and a.eval_accuracy == b.eval_accuracy and a.init_checksum == b.init_checksum
    assert (a.loader_workers, b.loader_workers) == (0, 2) and b.data_wait_s >= 0
    assert a.data_wait_s == a.data_time_s
