"""Stage 4: the same seed gives the same initial weights, and the checksum says so."""
from __future__ import annotations

import torch

from lstmbench.measure.model import build_model, weights_checksum
from lstmbench.suite.load import ModelConfig


def test_same_seed_same_weights_and_checksum():
    cfg = ModelConfig()
    a, b, c = (build_model(cfg, 64, 2, seed=s) for s in (0, 0, 1))
    assert weights_checksum(a) == weights_checksum(b) != weights_checksum(c)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert len(weights_checksum(a)) == 16


def test_build_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(ModelConfig(), 64, 2, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_readouts_agree_without_padding():
    model = build_model(ModelConfig(embed_dim=4, hidden_size=6, bidirectional=True), 10, 3, seed=0)
    tokens = torch.randint(1, 10, (5, 7))
    lengths = torch.full((5,), 7)
    last, mask, pack = (model(tokens, lengths, r) for r in ("last", "mask", "pack"))
    assert last.shape == (5, 3)
    torch.testing.assert_close(last, pack)
    torch.testing.assert_close(mask, pack)
