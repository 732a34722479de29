"""Micro-benchmarks: one training step per strategy (the presets and the ideal), with pytest-benchmark.

Outside `testpaths`, so `make test` never runs them. Run (about a minute on 2 cores):

    .venv/bin/python -m pytest benchmarks --benchmark-only --benchmark-json=.benchmarks/steps.json

Each strategy gets the same fixed batches: the default suite's data (`suites/packing.yaml`, seed 0), the
first BATCHES batches of the strategy's own seeded plan, collated before timing (batch preparation is not
timed here, unlike `lstmbench run`), and a model with the seed's initial weights. Each round is one
optimizer step (forward, backward, Adam update, as `train.train_step` does it) on the next batch in turn, so
every batch counts equally; the first pass over the batches is warm-up. `extra_info` holds the real and
padded tokens per step, so tokens/s = real_tokens_per_step / mean.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from lstmbench.data.make import make_data
from lstmbench.measure.loop import train_step
from lstmbench.measure.model import Precision, build_model
from lstmbench.strategies.strategy import Strategy, plan_epochs
from lstmbench.suite.load import IDEAL, PRESETS, StrategySpec, load_suite

SUITE = Path(__file__).resolve().parent.parent / "suites" / "packing.yaml"
SEED = 0
BATCHES = 8  # distinct batches per strategy
PASSES = 4  # timed rounds = PASSES x BATCHES

SPECS = [StrategySpec(name=name, **options) for name, options in PRESETS.items()] + [IDEAL]


@pytest.fixture(scope="module")
def suite_and_data():
    suite = load_suite(SUITE)
    return suite, make_data(suite.data, SEED).train


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_train_step(benchmark, suite_and_data, spec):
    suite, train = suite_and_data
    strategy = Strategy(spec)
    plan = plan_epochs(strategy, train.lengths, suite.train.batch_size, 1, SEED)[:BATCHES]
    batches = [strategy.collate(train, idx) for idx in plan]
    model = build_model(suite.model, suite.data.vocab_size, train.num_classes, SEED)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=suite.train.lr)
    precision = Precision("cpu", "none")
    turn = itertools.cycle(batches)

    def next_batch():
        return (model, optimizer, next(turn), strategy.readout, precision), {}

    benchmark.group = "train_step"
    benchmark.extra_info.update({
        "strategy": spec.name, "suite": str(SUITE.name), "seed": SEED, "batches": len(batches),
        "batch_size": suite.train.batch_size, "threads": torch.get_num_threads(),
        "real_tokens_per_step": sum(b.real_tokens for b in batches) / len(batches),
        "padded_tokens_per_step": sum(b.padded_tokens for b in batches) / len(batches),
    })
    loss = benchmark.pedantic(train_step, setup=next_batch, rounds=PASSES * len(batches),
                              warmup_rounds=len(batches))
    assert torch.isfinite(loss)
