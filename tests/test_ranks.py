"""The distributed forms of the strategies (no processes): every example once per epoch, ranks in step,
balanced dealing beating per-rank bucketing on long-tailed lengths; the loss denominators; shards."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lstmbench.data.make import IGNORE, make_data
from lstmbench.errors import LstmbenchError
from lstmbench.run.runner import plan_runs, shard_of
from lstmbench.strategies.ranks import coverage_problems, plan_ranks, planned_wait_fraction, rank_epochs
from lstmbench.strategies.strategy import Strategy, plan_epochs
from lstmbench.suite.load import IDEAL, PRESETS, StrategySpec, load_suite, suite_from_dict
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent

PACKING = load_suite(ROOT / "suites" / "packing.yaml")
DATA = make_data(PACKING.data, 0).train  # long-tailed: lognormal, sigma 0.8, lengths 4..400


def spec(name: str, deal: str = "per_rank") -> Strategy:
    return Strategy(StrategySpec(name=name, **PRESETS[name], deal=deal))


@pytest.mark.parametrize("deal", ["per_rank", "balanced"])
@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_example_once_per_epoch_and_ranks_in_step(name, world, deal):
    strategy = spec(name, deal)
    epochs = rank_epochs(strategy, DATA, 32, 2, seed=1, world=world)
    assert coverage_problems(epochs, len(DATA), world) == []
    assert len(epochs) == 2 and all(len(step) == world for epoch in epochs for step in epoch)
    flat = plan_ranks(strategy, DATA, 32, 2, seed=1, world=world)
    assert sum(len(e) for e in epochs) == len(flat)
    # the plan is a pure function of the seed: every rank computes the same one
    assert all(np.array_equal(a, b) for sa, sb in zip(flat, plan_ranks(strategy, DATA, 32, 2, 1, world))
               for a, b in zip(sa, sb))


def test_one_rank_is_the_single_process_plan():
    strategy = spec("bucket")
    single = plan_epochs(strategy, DATA.lengths, 32, 3, 0)
    steps = plan_ranks(strategy, DATA, 32, 3, 0, world=1)
    assert len(steps) == len(single) and all(np.array_equal(s[0], b) for s, b in zip(steps, single))


def test_coverage_problems_name_what_is_wrong():
    steps = [[np.array([0, 1]), np.array([1])], [np.array([3])]]
    assert coverage_problems([steps], 4, 2) == ["epoch 0, step 1: 1 batches for 2 ranks",
                                                "epoch 0: 1 examples unseen, 1 seen more than once"]


def test_balanced_dealing_waits_less_than_per_rank_bucketing_on_long_tailed_lengths():
    """The sampler-only estimate: per-rank bucketing leaves ranks with batches of different lengths."""
    for world in (2, 4):
        per_rank = planned_wait_fraction(spec("bucket"), DATA, plan_ranks(spec("bucket"), DATA, 32, 1, 0, world))
        balanced = plan_ranks(spec("bucket", "balanced"), DATA, 32, 1, 0, world)
        assert planned_wait_fraction(spec("bucket"), DATA, balanced) < per_rank / 2
    assert round(per_rank, 3) == 0.562  # 4 ranks: more than half of each step waiting, as planned
    assert planned_wait_fraction(spec("bucket"), DATA, [[np.arange(4), np.arange(4, 8)]]) >= 0


def test_per_rank_and_balanced_steps_hold_the_same_examples():
    for deal in ("per_rank", "balanced"):
        steps = plan_ranks(spec("token_budget", deal), DATA, 32, 1, 0, 2)
        assert sorted(np.concatenate([i for s in steps for i in s]).tolist()) == list(range(len(DATA)))


def test_too_few_examples_for_the_ranks():
    small = make_data(dataclasses.replace(PACKING.data, train_size=5), 0).train
    with pytest.raises(LstmbenchError, match="5 training examples cannot fill a batch on each of 4 ranks"):
        plan_ranks(spec("mask"), small, 32, 1, 0, 4)


@pytest.mark.parametrize("task", ["classify", "tag"])
@pytest.mark.parametrize("name", sorted(PRESETS) + ["ideal"])
def test_scored_counts_what_the_loss_averages(name, task):
    """DDP ranks scale their summed loss by the step's count, computed from the plan: it must equal the
    labels the collated batch scores."""
    suite = suite_from_dict({**TINY, "data": {**TINY["data"], "task": task}})
    data = make_data(suite.data, 0).train
    strategy = Strategy(IDEAL) if name == "ideal" else spec(name)
    for idx in plan_epochs(strategy, data.lengths, 16, 1, 0)[:4]:
        batch = strategy.collate(data, idx)
        expected = int((batch.labels != IGNORE).sum()) if task == "tag" else len(idx)
        assert strategy.scored(data, idx) == expected


def test_shards_partition_the_runs_and_each_keeps_its_seeds_ideal():
    plans = [plan_runs(PACKING)]
    shards = [shard_of(plans, k, 4)[0] for k in (1, 2, 3, 4)]
    strategy_runs = [(r.spec.name, r.seed) for shard in shards for r in shard if r.spec != IDEAL]
    assert sorted(strategy_runs) == sorted((r.spec.name, r.seed) for r in plans[0] if r.spec != IDEAL)
    assert len(strategy_runs) == len(set(strategy_runs)) == 21
    for shard in shards:
        ideal_seeds = [r.seed for r in shard if r.spec == IDEAL]
        assert sorted(ideal_seeds) == sorted({r.seed for r in shard if r.spec != IDEAL})
        positions = [r.position for r in shard]
        assert all(p >= 0 for p in positions)  # each run keeps its place in its seed's shuffled order
    assert [len(s) for s in shards] == [9, 8, 8, 8]
    assert shard_of(plans, 25, 30) == [[]]  # more shards than runs: some are empty


def test_new_keys_at_their_defaults_keep_stored_hashes():
    """launch and deal came after results were stored: at their defaults the suite hash is unchanged."""
    assert PACKING.hash == "c8345868630c"
    assert load_suite(ROOT / "suites" / "packing.yaml", ["launch.nproc=2"]).hash != PACKING.hash
    assert load_suite(ROOT / "suites" / "packing.yaml", ["strategies.4={bucket: {deal: balanced}}"]).hash != PACKING.hash
