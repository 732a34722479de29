"""Equivalence is tested, not assumed: masked, packed and bucketed batches give the loss and gradients of
processing each sequence alone; naive and truncate do not, and say so."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmbench.data.make import make_data
from lstmbench.measure.model import build_model
from lstmbench.measure.verify import check_batch
from lstmbench.strategies.strategy import Strategy, computation_note, plan_epochs
from lstmbench.suite.load import PRESETS, DataConfig, Lengths, ModelConfig, StrategySpec

STRATEGIES = {**PRESETS, "bucket-mask": {"batching": "bucket", "padding": "batch", "readout": "mask"},
              "mask-pad8": {"batching": "random", "padding": "batch", "readout": "mask", "pad_multiple": 8}}
DATA = DataConfig(train_size=64, eval_size=8, vocab_size=16, lengths=Lengths(median=12, sigma=0.8, min=2, max=60))


def _strategy(name: str) -> Strategy:
    params = dict(STRATEGIES[name])
    if name == "truncate":
        params["max_len"] = 10
    if name == "token_budget":
        params["max_tokens"] = 200  # several batches of different sizes from 64 short sequences
    return Strategy(StrategySpec(name=name, **params))


def _check(name: str, model_cfg: ModelConfig, dtype: torch.dtype):
    data = make_data(DATA, 0).train
    model = build_model(model_cfg, DATA.vocab_size, 2, seed=0).to(dtype)
    strategy = _strategy(name)
    batches = plan_epochs(strategy, data.lengths, 16, 1, seed=0)
    return [check_batch(model, strategy, data, idx) for idx in batches[:2]]


@pytest.mark.parametrize("name", ["mask", "pack", "bucket", "bucket-mask", "token_budget", "boundaries",
                                  "sorted_pack", "mask-pad8"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("layers", [1, 2])
def test_padding_free_strategies_equal_per_sequence_processing(name, dtype, tol, layers):
    cfg = ModelConfig(embed_dim=8, hidden_size=12, num_layers=layers)
    for result in _check(name, cfg, dtype):
        assert result.loss_rel_error < tol and result.grad_rel_error < tol, result
        assert result.holds(tol)


@pytest.mark.parametrize("name", ["naive", "truncate"])
def test_strategies_that_change_the_computation_differ_and_are_labelled(name):
    results = _check(name, ModelConfig(embed_dim=8, hidden_size=12), torch.float64)
    assert all(r.grad_rel_error > 1e-3 for r in results), results
    assert computation_note(_strategy(name).spec) != ""


@pytest.mark.parametrize("name", ["pack", "mask", "bucket-mask", "token_budget"])
@pytest.mark.parametrize("layers", [1, 2])
def test_bidirectional_pack_and_mask_are_exact(name, layers):
    cfg = ModelConfig(embed_dim=8, hidden_size=12, num_layers=layers, bidirectional=True)
    assert all(r.holds(1e-10) for r in _check(name, cfg, torch.float64))
    assert computation_note(_strategy(name).spec, bidirectional=True) == ""


def test_reference_is_not_trivially_satisfied():
    """A broken readout (one step early) must be caught by the same check."""
    data = make_data(DATA, 0).train
    model = build_model(ModelConfig(embed_dim=8, hidden_size=12), DATA.vocab_size, 2, seed=0).double()
    strategy = _strategy("mask")
    idx = plan_epochs(strategy, data.lengths, 16, 1, seed=0)[0]
    original = model.forward
    model.forward = lambda tokens, lengths, readout: original(tokens, (lengths - 1).clamp_min(1), readout)
    assert not check_batch(model, strategy, data, np.asarray(idx)).holds(1e-4)
