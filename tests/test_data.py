"""Stage 2: the synthetic marker task is seeded, bounded, and its label is in the sequence."""
from __future__ import annotations

import numpy as np

from lstmbench.data.make import PAD, make_data, sample_lengths
from lstmbench.suite.load import DataConfig, Lengths


def test_same_seed_same_data_other_seed_other_data():
    cfg = DataConfig(train_size=200, eval_size=50)
    a, b, c = make_data(cfg, 0), make_data(cfg, 0), make_data(cfg, 1)
    assert np.array_equal(a.train.tokens, b.train.tokens) and np.array_equal(a.eval.labels, b.eval.labels)
    assert not np.array_equal(a.train.lengths, c.train.lengths)
    assert len(a.train) == 200 and len(a.eval) == 50


def test_marker_present_exactly_when_label_is_one():
    cfg = DataConfig(train_size=500, eval_size=10, vocab_size=20)
    data = make_data(cfg, 3).train
    marker = cfg.vocab_size - 1
    has = np.array([(data.sequence(i) == marker).any() for i in range(len(data))])
    assert np.array_equal(has, data.labels == 1)
    assert 0.4 < data.labels.mean() < 0.6
    assert (data.tokens != PAD).all() and data.tokens.max() == marker


def test_padded_matrix_matches_the_sequences():
    data = make_data(DataConfig(train_size=50, eval_size=20), 0)
    assert data.train.padded.shape == (50, data.max_length) == (50, data.eval.padded.shape[1])
    for i in range(50):
        n = data.train.lengths[i]
        assert np.array_equal(data.train.padded[i, :n], data.train.sequence(i))
        assert (data.train.padded[i, n:] == PAD).all()


def test_length_distributions():
    rng = np.random.default_rng(0)
    logn = sample_lengths(Lengths(dist="lognormal", median=40, sigma=0.8, min=4, max=400), 20000, rng)
    assert logn.min() >= 4 and logn.max() <= 400
    assert 38 <= np.median(logn) <= 42
    uni = sample_lengths(Lengths(dist="uniform", min=5, max=9), 1000, rng)
    assert set(np.unique(uni)) == {5, 6, 7, 8, 9}
    assert (sample_lengths(Lengths(dist="fixed", length=7), 10, rng) == 7).all()
