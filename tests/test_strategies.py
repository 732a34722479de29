"""Stage 3: batching invariants: every example once per epoch, no token lost but by truncation, exact pad counts."""
from __future__ import annotations

import numpy as np
import pytest

from lstmbench.data.make import PAD, from_sequences, make_data
from lstmbench.strategies.strategy import PACKED, Strategy, computation_note, plan_epochs
from lstmbench.suite.load import PRESETS, DataConfig, Lengths, StrategySpec


def preset(name: str, **kw) -> Strategy:
    return Strategy(StrategySpec(name=name, **{**PRESETS[name], **kw}))


@pytest.fixture(scope="module")
def splits():
    return make_data(DataConfig(train_size=300, eval_size=70, lengths=Lengths(median=20, max=120)), 0)


FIXED_SIZE = [n for n in PRESETS if PRESETS[n]["batching"] in ("random", "bucket")]


@pytest.mark.parametrize("name", FIXED_SIZE)
def test_every_example_once_per_epoch(splits, name):
    lengths = splits.train.lengths
    batches = plan_epochs(preset(name), lengths, 32, 2, seed=5)
    assert len(batches) == 2 * 10  # ceil(300 / 32) per epoch
    for epoch in (batches[:10], batches[10:]):
        seen = np.concatenate(epoch)
        assert sorted(seen) == list(range(300))
        assert sorted(len(b) for b in epoch) == [12] + [32] * 9


def test_random_batching_is_shared_by_strategies_of_a_seed(splits):
    lengths = splits.train.lengths
    plans = [plan_epochs(preset(n), lengths, 32, 2, seed=1) for n in ("naive", "truncate", "mask", "pack")]
    for other in plans[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(plans[0], other))
    assert not np.array_equal(plans[0][0], plan_epochs(preset("mask"), lengths, 32, 1, seed=2)[0])


def test_bucketing_groups_similar_lengths(splits):
    lengths = splits.train.lengths
    batches = plan_epochs(preset("bucket"), lengths, 32, 1, seed=0)
    ranges = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        assert hi <= lo  # buckets are consecutive slices of the length order
    random_pad = sum(32 * lengths[b].max() for b in plan_epochs(preset("mask"), lengths, 32, 1, 0))
    bucket_pad = sum(32 * lengths[b].max() for b in batches)
    assert bucket_pad < 0.6 * random_pad


@pytest.mark.parametrize("max_tokens", [64, 500, 4096])
def test_token_budget_fills_batches_up_to_the_budget(splits, max_tokens):
    lengths = splits.train.lengths
    strategy = preset("token_budget", max_tokens=max_tokens)
    batches = plan_epochs(strategy, lengths, 32, 2, seed=0)
    for epoch in (batches[:len(batches) // 2], batches[len(batches) // 2:]):
        assert sorted(np.concatenate(epoch)) == list(range(300))
    for b in batches:
        padded = len(b) * lengths[b].max()
        assert padded <= max_tokens or len(b) == 1  # a sequence over the budget rides alone
    # a budget is filled: merging two neighbouring batches (in length order) would break it
    ordered = sorted(batches[:len(batches) // 2], key=lambda b: lengths[b].max())
    for a, b in zip(ordered, ordered[1:]):
        assert (len(a) + 1) * max(lengths[a].max(), lengths[b].min()) > max_tokens
    sizes = {len(b) for b in batches}
    assert len(sizes) > 1 or max_tokens == 64  # the batch size varies with length


def test_token_budget_is_exact_and_listed():
    assert computation_note(preset("token_budget").spec) == ""
    assert PRESETS["token_budget"]["max_tokens"] == 4096


@pytest.mark.parametrize("name", list(PRESETS))
def test_collate_keeps_every_token_and_counts_padding_exactly(splits, name):
    strategy = preset(name)
    data, global_max = splits.train, splits.max_length
    assert data.max_length == global_max
    for idx in plan_epochs(strategy, data.lengths, 32, 1, seed=0):
        batch = strategy.collate(data, idx)
        lengths = data.lengths[idx]
        kept = np.minimum(lengths, 64) if name == "truncate" else lengths
        width = global_max if name == "naive" else kept.max()
        assert tuple(batch.tokens.shape) == (len(idx), width)
        assert batch.padded_tokens == len(idx) * width
        assert batch.real_tokens == kept.sum() == int((batch.tokens != PAD).sum())
        assert sorted(batch.lengths.tolist()) == sorted(kept.tolist())
        if strategy.readout in PACKED:  # packing's batch comes sorted, longest first, for enforce_sorted=True
            order = np.argsort(-lengths, kind="stable")
            idx, kept = idx[order], kept[order]
            assert batch.lengths.tolist() == sorted(kept.tolist(), reverse=True)
        for row, i in enumerate(idx):
            assert batch.tokens[row, :kept[row]].tolist() == data.sequence(i)[:kept[row]].tolist()


def test_pad_counts_on_hand_made_lengths():
    seqs = [[1] * 9, [2] * 5, [3] * 6, [4] * 3]
    data = from_sequences(seqs, [0, 1, 0, 1], width=12)  # as if another split held a sequence of 12
    idx = np.arange(4)

    def counts(strategy, rows):
        batch = strategy.collate(data, np.asarray(rows))
        return batch.real_tokens, batch.padded_tokens

    assert counts(preset("truncate", max_len=4), idx) == (15, 16)
    assert counts(preset("mask"), idx) == (23, 36)
    assert counts(preset("pack"), [1, 3]) == (8, 10)
    assert counts(preset("naive"), [1, 3]) == (8, 24)


def test_computation_notes_label_what_changes_the_computation():
    notes = {n: computation_note(preset(n).spec) for n in PRESETS}
    assert notes == {"naive": "reads the output after the padding", "truncate": "truncates to 64 tokens",
                     "mask": "", "pack": "", "bucket": "", "token_budget": "", "boundaries": "",
                     "sorted_pack": ""}
    assert computation_note(preset("mask").spec, bidirectional=True) == ""  # reversed within each length
    assert computation_note(preset("pack").spec, bidirectional=True) == ""


def test_ideal_batches_reshape_the_same_tokens_without_padding(splits):
    from lstmbench.suite.load import IDEAL

    ideal, data = Strategy(IDEAL), splits.train
    for idx in plan_epochs(ideal, data.lengths, 32, 1, seed=0):
        batch = ideal.collate(data, idx)
        tokens = np.concatenate([data.sequence(i) for i in idx])
        width = len(tokens) // len(idx)
        assert tuple(batch.tokens.shape) == (len(idx), width)
        assert batch.real_tokens == batch.padded_tokens == len(idx) * width
        assert batch.tokens.flatten().tolist() == tokens[:len(idx) * width].tolist()
        assert (batch.lengths == width).all()
    assert computation_note(IDEAL).startswith("unpadded:")


def test_boundaries_batch_within_length_ranges(splits):
    lengths = splits.train.lengths
    strategy = preset("boundaries", boundaries=(10, 20, 40))
    batches = plan_epochs(strategy, lengths, 32, 1, seed=0)
    assert sorted(np.concatenate(batches)) == list(range(300))
    edges = [0, 10, 20, 40, 10**9]
    for b in batches:
        ranges = {next(i for i in range(4) if lengths[j] <= edges[i + 1]) for j in b}
        assert len(ranges) == 1 and len(b) <= 32  # lengths <= 10, 11-20, 21-40, > 40: one range per batch


def test_pad_multiple_rounds_the_time_axis(splits):
    data = splits.train
    for name, multiple in (("mask", 8), ("naive", 64), ("truncate", 5)):
        strategy = preset(name, pad_multiple=multiple)
        for idx in plan_epochs(strategy, data.lengths, 32, 1, seed=0)[:5]:
            batch = strategy.collate(data, idx)
            width = batch.tokens.shape[1]
            plain = preset(name).collate(data, idx)
            assert width % multiple == 0 and plain.tokens.shape[1] <= width < plain.tokens.shape[1] + multiple
            assert batch.real_tokens == plain.real_tokens and batch.padded_tokens == len(idx) * width
            assert (batch.tokens[:, plain.tokens.shape[1]:] == PAD).all()


def test_megabatch_bucketing_sorts_within_slices(splits):
    lengths = splits.train.lengths
    strategy = preset("bucket", megabatch=3)
    batches = plan_epochs(strategy, lengths, 32, 1, seed=0)
    assert sorted(np.concatenate(batches)) == list(range(300))
    full = sum(32 * lengths[b].max() for b in plan_epochs(preset("bucket"), lengths, 32, 1, 0))
    mega = sum(len(b) * lengths[b].max() for b in batches)
    plain = sum(len(b) * lengths[b].max() for b in plan_epochs(preset("mask"), lengths, 32, 1, 0))
    assert full <= mega < plain  # less padding than random batches, a little more than a full sort
    rng = np.random.default_rng([0, 0xBA7C])
    order = rng.permutation(300)
    first = order[:96]  # the first mega-batch: 3 batches of 32, each a slice of its sorted lengths
    assert sorted(lengths[first].tolist()) == sorted(np.concatenate(
        [lengths[b] for b in batches if set(b) <= set(first)]).tolist())
