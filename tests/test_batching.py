"""The public batching API equals what the harness plans, collates and reads, and refuses bad arguments clearly."""
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.data import DataLoader

from lstmbench.batching import batch_sampler, bidirectional_lstm, collate, last_step, strategy_spec
from lstmbench.data.make import from_sequences
from lstmbench.errors import BatchingError
from lstmbench.strategies.ranks import plan_ranks
from lstmbench.strategies.strategy import Strategy, plan_epochs
from lstmbench.suite.load import PRESETS

RNG = np.random.default_rng(7)
LENGTHS = np.clip(RNG.lognormal(np.log(20), 0.8, 203).astype(int), 1, 150)
ALL = list(PRESETS) + [{"name": "bucket-mask", "batching": "bucket", "padding": "batch", "readout": "mask"},
                       {"name": "mega", "batching": "bucket", "readout": "mask", "megabatch": 2}]


def _label(strategy) -> str:
    return strategy if isinstance(strategy, str) else strategy["name"]


@pytest.mark.parametrize("strategy", ALL, ids=_label)
def test_sampler_is_the_harness_plan_and_covers_every_example_once(strategy):
    sampler = batch_sampler(LENGTHS, strategy, 16, seed=3)
    spec = strategy_spec(strategy)
    harness = plan_epochs(Strategy(spec), LENGTHS, 16, 3, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(sampler) == len(batches)
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))  # each once an epoch
        epochs.append(batches)
    assert [b for batches in epochs for b in batches] == [idx.tolist() for idx in harness]
    sampler.set_epoch(1)  # back in time: the same epoch again
    assert list(sampler) == epochs[1]


def test_set_epoch_back_and_forth_gives_the_same_epochs():
    sampler = batch_sampler(LENGTHS, "bucket", 16, seed=1)
    first = [list(sampler)]
    sampler.set_epoch(2)
    third = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first[0]
    sampler.set_epoch(2)
    assert list(sampler) == third
    assert third != first[0]


@pytest.mark.parametrize("deal", ["per_rank", "balanced"])
@pytest.mark.parametrize("strategy", ["bucket", "token_budget", "mask"])
def test_ranks_deal_as_the_harness_does(strategy, deal):
    world, epochs = 3, 2
    data = from_sequences([np.ones(n, dtype=np.int64) for n in LENGTHS], np.zeros(len(LENGTHS)))
    spec = strategy_spec(strategy, deal=deal)
    steps = plan_ranks(Strategy(spec), data, 8, epochs, 5, world)
    samplers = [batch_sampler(LENGTHS, strategy, 8, seed=5, num_replicas=world, rank=r, deal=deal)
                for r in range(world)]
    per_epoch = len(steps) // epochs
    for epoch in range(epochs):
        columns = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            columns.append(list(sampler))
        assert len({len(c) for c in columns}) == 1  # ranks in step
        assert sorted(i for c in columns for b in c for i in b) == list(range(len(LENGTHS)))
        for r, column in enumerate(columns):
            assert column == [step[r].tolist() for step in steps[epoch * per_epoch:(epoch + 1) * per_epoch]]


def test_drop_last_drops_only_the_short_batch():
    sampler = batch_sampler(LENGTHS, "bucket", 16, drop_last=True)
    batches = list(sampler)
    assert {len(b) for b in batches} == {16}
    assert len(batches) == len(LENGTHS) // 16


def _pairs(tagged=False, features=False, n=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 30, n)
    if features:
        seqs = [rng.normal(size=(int(k), 3)).astype(np.float32) for k in lengths]
    else:
        seqs = [rng.integers(1, 50, int(k)) for k in lengths]
    labels = [rng.integers(0, 4, int(k)) for k in lengths] if tagged else list(rng.integers(0, 2, n))
    return seqs, labels


@pytest.mark.parametrize("strategy", ALL, ids=_label)
@pytest.mark.parametrize("kind", ["tokens", "features", "tagged"])
def test_collate_equals_the_harness_batches(strategy, kind):
    seqs, labels = _pairs(tagged=kind == "tagged", features=kind == "features")
    data = from_sequences(seqs, np.zeros(len(seqs)) if kind == "tagged" else labels)
    if kind == "tagged":  # the harness's tag data: a label per step, IGNORE past each end
        from lstmbench.data.make import from_pairs
        data = from_pairs([np.asarray(s) for s in seqs], [np.asarray(y) for y in labels], data.max_length)
    spec = strategy_spec(strategy)
    fn = collate(strategy, max_length=data.max_length)
    for idx in batch_sampler(data.lengths, strategy, 8, seed=2):
        ours = fn([(torch.as_tensor(seqs[i]), labels[i]) for i in idx])
        theirs = Strategy(spec).collate(data, np.asarray(idx))
        assert torch.equal(ours.inputs, theirs.tokens)
        assert torch.equal(ours.lengths, theirs.lengths) and ours.lengths.dtype == torch.int64
        assert torch.equal(ours.labels, theirs.labels)


def test_pad_value_and_pad_multiple_and_packing():
    seqs, labels = _pairs()
    batch = collate("pack", pad_value=-1, pad_multiple=8)([(seqs[i], labels[i]) for i in range(5)])
    assert batch.inputs.shape[1] % 8 == 0
    for row, n in zip(batch.inputs, batch.lengths):
        assert (row[n:] == -1).all() and (row[:n] > 0).all()
    packed = batch.packed(batch.inputs.float().unsqueeze(-1))
    assert int(packed.batch_sizes.sum()) == int(batch.lengths.sum())
    assert pickle.loads(pickle.dumps(collate("truncate", max_len=4))).strategy.spec.max_len == 4  # for workers


def test_a_dataloader_with_workers_yields_the_sampler_batches():
    seqs, labels = _pairs(n=30)
    pairs = list(zip(seqs, labels))
    sampler = batch_sampler([len(s) for s in seqs], "bucket", 8, seed=4)
    loader = DataLoader(pairs, batch_sampler=sampler, collate_fn=collate("bucket"), num_workers=2)
    got = [b.lengths.tolist() for b in loader]
    # a packing strategy's rows come longest first (it packs with enforce_sorted=True)
    assert got == [sorted((len(seqs[i]) for i in idx), reverse=True) for idx in sampler]


def _sequences(n=6, features=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 3, 1, 7, 5, 2][:n])
    x = torch.randn(n, int(lengths.max()), features, generator=g, dtype=dtype)
    x[torch.arange(x.shape[1]) >= lengths[:, None]] = 99.0  # padding that must not matter
    return x, lengths


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_bidirectional_lstm_equals_each_sequence_alone(bidirectional, layers):
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 4, num_layers=layers, batch_first=True, bidirectional=bidirectional).double()
    x, lengths = _sequences()
    output, last = bidirectional_lstm(lstm, x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, (h_n, _) = lstm(x[i:i + 1, :n])
        torch.testing.assert_close(output[i, :n], alone[0], rtol=1e-12, atol=1e-12)
        assert (output[i, n:] == 0).all()
        final = torch.cat(list(h_n[-(2 if bidirectional else 1):, 0]))
        torch.testing.assert_close(last[i], final, rtol=1e-12, atol=1e-12)
    # gradients too: equal to the packed run's
    packed_out, (h_n, _) = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    ref = torch.autograd.grad(torch.cat(list(h_n[-(2 if bidirectional else 1):]), 1).square().sum(),
                              list(lstm.parameters()))
    ours = torch.autograd.grad(bidirectional_lstm(lstm, x, lengths)[1].square().sum(), list(lstm.parameters()))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    padded, _ = pad_packed_sequence(packed_out, batch_first=True)
    torch.testing.assert_close(last_step(padded, lengths, bidirectional=bidirectional), last)


def test_bidirectional_lstm_time_major():
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 4, bidirectional=True).double()
    x, lengths = _sequences()
    output, last = bidirectional_lstm(lstm, x.transpose(0, 1), lengths)
    assert output.shape == (7, 6, 8)
    alone, _ = lstm(x[1, :3].unsqueeze(1))
    torch.testing.assert_close(output[:3, 1], alone[:, 0])


@pytest.mark.parametrize("call, message", [
    (lambda: batch_sampler([3, 4], "buket", 2),
     "lstmbench.batching: strategy: unknown strategy 'buket' (did you mean 'bucket'?); valid: boundaries, bucket, "
     "mask, naive, pack, sorted_pack, token_budget, truncate"),
    (lambda: batch_sampler([3, 0], "bucket", 2),
     "every length must be >= 1 (an empty sequence has no last step): example 1 has length 0"),
    (lambda: batch_sampler([3.5, 2], "bucket", 2), "lengths must be a non-empty 1-D sequence of integers, got "
                                                   "float64 of shape (2,)"),
    (lambda: batch_sampler([3, 4], "bucket", 0), "batch_size must be an integer >= 1, got 0"),
    (lambda: batch_sampler([3, 4, 5, 6], "bucket", 2, num_replicas=2, rank=2), "rank must be in [0, 2), got 2"),
    (lambda: batch_sampler([3, 4, 5, 6], "bucket", 2, num_replicas=2, drop_last=True),
     "drop_last does not apply here: under DDP every rank already has as many steps"),
    (lambda: batch_sampler([3, 4], "bucket", 2, max_tokens=5),
     "lstmbench.batching: strategy.bucket.max_tokens: is only used with batching: token_budget"),
    (lambda: collate("mask")([]), "an empty batch: the sampler gave no indices"),
    (lambda: collate("mask")([([1, 2], 0), (np.ones((2, 3)), 1)]), "the batch mixes sequence shapes: [length, 3] features, token ids"),
    (lambda: collate("mask")([([], 0)]), "item 0: a sequence must be 1-D (token ids) or 2-D [length, features] "
                                         "with at least one step, got shape (0,)"),
    (lambda: collate("naive")([([1, 2], 0)]), "padding global pads to the data set's longest sequence: pass "
                                              "collate(..., max_length=N)"),
    (lambda: collate("mask")([([1, 2], [0])]), "item 0: 1 per-step labels for a sequence of 2 steps"),
])
def test_bad_arguments_are_one_clear_value_error(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert isinstance(e.value, BatchingError)
    assert str(e.value) == message


_TOKENS = [([1, 2], 0), ([1], 1)]
_LSTM = nn.LSTM(4, 5, batch_first=True)


@pytest.mark.parametrize("call, message", [
    (lambda: batch_sampler([3, 4], "bucket", 2, seed=-1), "seed must be an integer from 0 to 4294967295, got -1"),
    (lambda: batch_sampler([3, 4], "bucket", 2, seed=1.5), "seed must be an integer from 0 to 4294967295, got 1.5"),
    (lambda: batch_sampler([3, 4], "bucket", 2, seed="3"), "seed must be an integer from 0 to 4294967295, got '3'"),
    (lambda: batch_sampler([3, 4], "bucket", 2, seed=2**32), "seed must be an integer from 0 to 4294967295, got "
                                                             "4294967296"),
    (lambda: batch_sampler(np.array([3, 2**63 + 5], dtype=np.uint64), "bucket", 2),
     "every length must be at most 2**63 - 1 (int64): example 1 has length 9223372036854775813"),
    (lambda: batch_sampler([[3], [4, 5]], "bucket", 2),
     "lengths must be a non-empty 1-D sequence of integers, got [[3], [4, 5]]"),
    (lambda: batch_sampler([3, 4], "bucket", 2, deal="balanced"),
     "deal balanced deals each step's batches over the ranks, so it needs num_replicas > 1, got num_replicas=1"),
    (lambda: batch_sampler([3, 4], {"name": "b", "batching": "bucket", "deal": "balanced"}, 2),
     "deal balanced deals each step's batches over the ranks, so it needs num_replicas > 1, got num_replicas=1"),
    (lambda: batch_sampler([3, 4], "bucket", True), "batch_size must be an integer >= 1, got True"),
    (lambda: batch_sampler([3, 4], "bucket", 2, drop_last="no"), "drop_last must be True or False, got 'no'"),
    (lambda: batch_sampler([3, 4], "bucket-maks", 2),
     "lstmbench.batching: strategy: unknown strategy 'bucket-maks'; give a composed strategy as the mapping "
     '{"name": ..., "batching": ..., "padding": ..., "readout": ...} or name it "<batching>-<readout>" (batching '
     'random, bucket, boundaries, token_budget; readout last, mask, pack, pack_sorted), as in "bucket-mask"'),
    (lambda: collate("mask", pad_value=0.5)(_TOKENS),
     "pad_value must be an integer for token ids (from -2**63 to 2**63 - 1), got 0.5"),
    (lambda: collate("mask", pad_value=2**70),
     "pad_value must be a number (an integer from -2**63 to 2**63 - 1, or a float), got 1180591620717411303424"),
    (lambda: collate("mask", pad_value="x"),
     "pad_value must be a number (an integer from -2**63 to 2**63 - 1, or a float), got 'x'"),
    (lambda: collate("mask", pad_value=1e300)([(np.ones((2, 3)), 0)]),
     "pad_value must fit float32 features (at most 3.4e+38 in magnitude), got 1e+300"),
    (lambda: collate("mask")([([1, 2], "a")]),
     "item 0: labels must be integers (or floats, kept as regression targets), got 'a'"),
    (lambda: collate("mask")([([1, 2], 0), ([1], None)]),
     "item 1: labels must be integers (or floats, kept as regression targets), got None"),
    (lambda: collate("mask")([([1, 2], [0.5, 1.5])]), "item 0: per-step labels must be integers, got [0.5, 1.5]"),
    (lambda: collate("mask")([([[1, 2], [3]], 0)]),
     "item 0: a sequence must be a rectangular array of numbers, got [[1, 2], [3]]"),
    (lambda: collate("mask")([([1, 2], 0), ([4, -2], 1)]),
     "item 1: token ids must be from 0 to 2**63 - 1 (nn.Embedding indices), got -2"),
    (lambda: collate("mask")([(np.full((2, 3), "a"), 0)]),
     "item 0: 2-D sequences are [length, features] and must hold real numbers, got <U1"),
    (lambda: collate("mask")(5), "pairs must be a list of (sequence, label) pairs, got int"),
    (lambda: last_step(torch.zeros(2, 3, 4), torch.tensor([0, 3])),
     "last_step: lengths must be in [1, 3] (the time steps), got 0"),
    (lambda: last_step(torch.zeros(2, 3, 4), torch.tensor([4, 3])),
     "last_step: lengths must be in [1, 3] (the time steps), got 4"),
    (lambda: last_step(torch.zeros(2, 3, 4), [1, 3]),
     "last_step: lengths must be a tensor of integers (e.g. batch.lengths), got a list"),
    (lambda: last_step(torch.zeros(2, 3, 4), torch.tensor([1.0, 3.0])),
     "last_step: lengths must be a tensor of integers (e.g. batch.lengths), got torch.float32"),
    (lambda: last_step(torch.zeros(2, 3), torch.tensor([1, 3])),
     "last_step: output must be a batch-first [B, T, H] LSTM output, got shape (2, 3)"),
    (lambda: last_step(torch.zeros(2, 3, 4), torch.tensor([1, 3, 2])),
     "last_step: lengths must hold 2 lengths, one per row of output (a time-major [T, B, H] output must be "
     "transposed first), got shape (3,)"),
    (lambda: last_step(torch.zeros(2, 3, 5), torch.tensor([1, 3]), bidirectional=True),
     "last_step: a bidirectional output holds both directions (2H features), so its last dimension must be even, "
     "got 5"),
    (lambda: bidirectional_lstm(nn.GRU(4, 5, batch_first=True), torch.zeros(2, 3, 4), torch.tensor([1, 3])),
     "bidirectional_lstm: lstm must be an nn.LSTM, got GRU"),
    (lambda: bidirectional_lstm(_LSTM, torch.zeros(2, 3, 4), torch.tensor([1.5, 3.0])),
     "bidirectional_lstm: lengths must be an integer tensor or a list of ints, got torch.float32"),
    (lambda: bidirectional_lstm(_LSTM, torch.zeros(2, 3, 4), [1.5, 3]),
     "bidirectional_lstm: lengths must be an integer tensor or a list of ints, got [1.5, 3]"),
    (lambda: bidirectional_lstm(nn.LSTM(4, 5), torch.zeros(4), torch.tensor([1])),
     "bidirectional_lstm: x must be 3-D, [T, B, input] (time-major), got shape (4,)"),
    (lambda: bidirectional_lstm(_LSTM, torch.zeros(2, 3, 6), torch.tensor([1, 3])),
     "bidirectional_lstm: x has 6 features per step, but the LSTM's input_size is 4"),
    (lambda: bidirectional_lstm(_LSTM, torch.zeros(2, 3, 4, dtype=torch.float64), torch.tensor([1, 3])),
     "bidirectional_lstm: x is torch.float64, but its dtype must match the LSTM's weights (torch.float32)"),
    (lambda: bidirectional_lstm(_LSTM, torch.zeros(2, 3, 4, device="meta"), torch.tensor([1, 3])),
     "bidirectional_lstm: x is on meta, but it must be on the LSTM's device (cpu)"),
    (lambda: bidirectional_lstm(_LSTM, torch.zeros(2, 3, 4), [1, 3, 2]),
     "bidirectional_lstm: lengths must hold 2 lengths, one per sequence of x [B, T, input] (the LSTM is "
     "batch_first), got shape (3,)"),
    (lambda: bidirectional_lstm(_LSTM, torch.zeros(2, 3, 4), [0, 3]),
     "bidirectional_lstm: lengths must be in [1, 3] (the time steps), got 0"),
])
def test_hostile_arguments_are_one_batching_error_naming_the_argument(call, message):
    with pytest.raises(BatchingError) as e:
        call()
    assert str(e.value) == message


def test_a_composed_name_as_recommend_prints_it_is_that_composition():
    mapping = {"name": "bucket-mask", "batching": "bucket", "padding": "batch", "readout": "mask"}
    assert strategy_spec("bucket-mask") == strategy_spec(mapping)
    assert list(batch_sampler(LENGTHS, "bucket-mask", 16, seed=3)) == list(batch_sampler(LENGTHS, mapping, 16, seed=3))
    assert strategy_spec("token_budget-pack_sorted", max_tokens=64).max_tokens == 64


def test_checked_entries_still_take_what_they_document():
    assert collate("mask", pad_value=2.0)(_TOKENS).inputs.tolist() == [[1, 2], [1, 2]]
    assert collate("mask", pad_value=-1.5)([(np.ones((2, 3)), 0.5), (np.ones((1, 3)), 1.5)]).inputs[1, 1, 0] == -1.5
    assert last_step(torch.arange(12.).view(2, 3, 2), torch.tensor([1, 3], dtype=torch.int32)).tolist() == \
        [[0.0, 1.0], [10.0, 11.0]]
    assert bidirectional_lstm(_LSTM, torch.zeros(0, 3, 4), [])[1].shape == (0, 5)
    assert bidirectional_lstm(_LSTM, torch.zeros(2, 3, 4), np.array([1, 3], dtype=np.int32))[1].shape == (2, 5)


# property: whatever a user passes, the API answers with a result or one BatchingError, never another exception
from hypothesis import (  # noqa: E402
    HealthCheck,
    given,
    settings,
    strategies as st,  # noqa: E402
)

ODD = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
       | st.text(max_size=5) | st.sampled_from(["bucket", "mask", "bucket-mask", "pack", "naive", "balanced"]))
ODD_LISTS = st.lists(ODD, max_size=5) | st.lists(st.integers(-3, 60), max_size=8)
SETTINGS = settings(max_examples=int(os.environ.get("API_FUZZ_EXAMPLES", 150)), deadline=None,
                    suppress_health_check=list(HealthCheck), derandomize=not os.environ.get("API_FUZZ_EXAMPLES"))


def _one_sentence(call) -> None:
    try:
        call()
    except BatchingError as e:
        assert "\n" not in str(e) and len(str(e)) < 700, str(e)


@SETTINGS
@given(lengths=ODD_LISTS | ODD, strategy=ODD | st.dictionaries(st.sampled_from(["name", "batching", "readout",
                                                                                "padding", "max_len"]), ODD),
       batch_size=ODD, seed=ODD, replicas=ODD, rank=ODD)
def test_batch_sampler_answers_any_arguments_with_one_sentence(lengths, strategy, batch_size, seed, replicas, rank):
    def call():
        sampler = batch_sampler(lengths, strategy, batch_size, seed=seed, num_replicas=replicas, rank=rank)
        list(sampler)
    _one_sentence(call)


@SETTINGS
@given(items=st.lists(st.tuples(ODD_LISTS | ODD, ODD | ODD_LISTS), max_size=4), pad_value=ODD,
       strategy=st.sampled_from(["mask", "pack", "naive", "bucket-mask", "truncate"]))
def test_collate_answers_any_batch_with_one_sentence(items, pad_value, strategy):
    _one_sentence(lambda: collate(strategy, pad_value=pad_value, max_length=64)(items))


@SETTINGS
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=4), lengths=ODD_LISTS | ODD,
       as_tensor=st.booleans(), bidirectional=ODD)
def test_last_step_answers_any_arguments_with_one_sentence(shape, lengths, as_tensor, bidirectional):
    def call():
        given_lengths = lengths
        if as_tensor and isinstance(lengths, list) and all(isinstance(v, int) for v in lengths):
            given_lengths = torch.tensor(lengths, dtype=torch.int64)
        last_step(torch.zeros(shape), given_lengths, bidirectional=bidirectional)
    _one_sentence(call)
