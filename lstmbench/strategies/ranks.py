"""Stage 3b, the distributed form of a strategy: which batch each DDP rank trains on at each step.

Every example is seen once per epoch across the ranks, and every rank has the same number of steps (a rank
that ran out of batches would leave the others waiting at the all-reduce forever). Two ways to deal:

- per_rank: each epoch's shuffle is split into one shard per rank (DistributedSampler's `[rank::world]`),
  and each rank batches its own shard with the strategy's batching: what a length-grouping sampler gives
  under DDP unless it is made rank-aware. Bucketed batches of different ranks then differ in length.
- balanced: the epoch's batches are formed from the whole data set, sorted by cost (padded cells), cut into
  groups of `world` neighbours, and each group is one step, one batch per rank (what fairseq, lhotse's
  sync_buckets and LLaVA's length-balanced split do), so every rank has a batch of similar cost.

Both are pure functions of the lengths and the seed: every rank computes the whole plan and takes its column,
so no step needs a collective to agree on batches or on the loss's denominator.
"""
from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from ..data import Dataset
from ..errors import LstmbenchError
from .strategy import Strategy, plan_epochs

Steps = list[list[np.ndarray]]  # steps[s][r]: the example indices of rank r's batch at step s


def plan_ranks(strategy: Strategy, data: Dataset, batch_size: int, epochs: int, seed: int, world: int) -> Steps:
    """Every epoch's steps, one batch per rank each. With one rank: the single-process plan itself."""
    if world == 1:
        return [[idx] for idx in plan_epochs(strategy, data.lengths, batch_size, epochs, seed)]
    return [step for epoch in rank_epochs(strategy, data, batch_size, epochs, seed, world) for step in epoch]


def rank_epochs(strategy: Strategy, data: Dataset, batch_size: int, epochs: int, seed: int,
                world: int) -> list[Steps]:
    """The steps of each epoch on `world` >= 2 ranks (one rank trains the single-process plan: plan_ranks)."""
    return list(itertools.islice(rank_epoch_stream(strategy, data, batch_size, seed, world), epochs))


def rank_epoch_stream(strategy: Strategy, data: Dataset, batch_size: int, seed: int, world: int) -> Iterator[Steps]:
    """Epoch after epoch, that epoch's steps on `world` >= 2 ranks (batching.batch_sampler walks it)."""
    if len(data) < 2 * world:
        raise LstmbenchError(f"{len(data)} training examples cannot fill a batch on each of {world} ranks")
    return _deals(strategy, data, batch_size, seed, world)


def _deals(strategy: Strategy, data: Dataset, batch_size: int, seed: int, world: int) -> Iterator[Steps]:
    rng = np.random.default_rng([seed, 0xBA7C, world])
    deal = _balanced if strategy.spec.deal == "balanced" else _per_rank
    while True:
        yield deal(strategy, data, batch_size, world, rng)


def _per_rank(strategy: Strategy, data: Dataset, batch_size: int, world: int, rng: np.random.Generator) -> Steps:
    order = rng.permutation(len(data))
    shards = [order[r::world] for r in range(world)]
    plans = [[shard[local] for local in strategy.plan(data.lengths[shard], batch_size, rng)] for shard in shards]
    count = max(len(p) for p in plans)
    plans = [_split_until(p, count, strategy, data) for p in plans]
    return [list(step) for step in zip(*plans)]


def _balanced(strategy: Strategy, data: Dataset, batch_size: int, world: int, rng: np.random.Generator) -> Steps:
    batches = strategy.plan(data.lengths, batch_size, rng)
    batches = _split_until(batches, -(-len(batches) // world) * world, strategy, data)
    costs = np.array([cost(strategy, data, idx) for idx in batches])
    ranked = np.argsort(-costs, kind="stable")
    groups = [ranked[i:i + world] for i in range(0, len(ranked), world)]
    return [[batches[j] for j in rng.permutation(groups[g])] for g in rng.permutation(len(groups))]


def _split_until(batches: list[np.ndarray], count: int, strategy: Strategy, data: Dataset) -> list[np.ndarray]:
    """Split the costliest batch in two (keeping its order) until there are `count`: the same examples,
    more steps. Used only to give ranks equal step counts: at most a few splits an epoch."""
    batches = list(batches)
    while len(batches) < count:
        sizes = [len(b) for b in batches]
        if max(sizes) < 2:
            raise LstmbenchError(f"cannot give every rank {count} steps: only {sum(sizes)} examples")
        i = max((j for j in range(len(batches)) if sizes[j] > 1), key=lambda j: cost(strategy, data, batches[j]))
        half = len(batches[i]) // 2
        batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


def cost(strategy: Strategy, data: Dataset, idx: np.ndarray) -> int:
    """Padded cells (batch x time) of a batch: what an LSTM step costs, as it loops over time."""
    rows, width = strategy.shape(data, idx)
    return rows * width


def planned_wait_fraction(strategy: Strategy, data: Dataset, steps: Steps) -> float:
    """The share of rank time spent waiting for the slowest rank if a batch took time in proportion to its
    padded cells: a sampler-only estimate, next to the measured `straggler_wait_fraction`."""
    costs = np.array([[cost(strategy, data, idx) for idx in step] for step in steps], dtype=float)
    slowest = costs.max(axis=1, keepdims=True)
    return float((slowest - costs).sum() / (slowest.sum() * costs.shape[1]))


def coverage_problems(epochs: list[Steps], n: int, world: int) -> list[str]:
    """What is wrong with a plan (nothing, expected): a step without one batch per rank, an empty batch, or an
    example not seen exactly once in an epoch."""
    problems = []
    for e, steps in enumerate(epochs):
        problems += [f"epoch {e}, step {s}: {len(step)} batches for {world} ranks"
                     for s, step in enumerate(steps) if len(step) != world]
        problems += [f"epoch {e}, step {s}: an empty batch" for s, step in enumerate(steps) if min(map(len, step)) == 0]
        seen = np.concatenate([idx for step in steps for idx in step])
        counts = np.bincount(seen, minlength=n)
        if len(seen) != n or counts.max() != 1:
            problems.append(f"epoch {e}: {int((counts == 0).sum())} examples unseen, "
                            f"{int((counts > 1).sum())} seen more than once")
    return problems
