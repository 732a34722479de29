"""verify: each strategy of a suite against per-sequence processing, on real batches of its data."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.suite import load_suite
from lstmbench.verify import AS_DESIGNED, EQUIVALENT, MISMATCH, verify_suite


def test_real_strategies_pass(tiny_file):
    verdicts = {v.strategy: v for v in verify_suite(load_suite(tiny_file))}
    assert [v.verdict for v in verdicts.values()] == [AS_DESIGNED, AS_DESIGNED, EQUIVALENT, EQUIVALENT, EQUIVALENT]
    assert verdicts["mask"].grad_rel_error < 1e-10 and verdicts["naive"].grad_rel_error > 1e-3
    assert verdicts["truncate"].note == "truncates to 6 tokens"
    assert all(v.batches == 3 for v in verdicts.values())


def test_bidirectional_mask_is_shown_as_it_is(tiny_file):
    verdicts = {v.strategy: v for v in verify_suite(load_suite(tiny_file, ["model.bidirectional=true"]))}
    assert verdicts["mask"].verdict == AS_DESIGNED
    assert verdicts["mask"].note == "the reverse direction runs over the padding"
    assert verdicts["pack"].verdict == verdicts["bucket"].verdict == EQUIVALENT


@pytest.fixture
def broken_mask_readout(monkeypatch):
    """A deliberately broken readout: the masked strategies read one step before each sequence's end."""
    from lstmbench.model import LSTMClassifier

    original = LSTMClassifier.forward

    def forward(self, tokens, lengths, readout):
        if readout == "mask":
            lengths = (lengths - 1).clamp_min(1)
        return original(self, tokens, lengths, readout)

    monkeypatch.setattr(LSTMClassifier, "forward", forward)


def test_an_injected_mismatch_is_found(tiny_file, broken_mask_readout):
    verdicts = {v.strategy: v.verdict for v in verify_suite(load_suite(tiny_file))}
    assert verdicts["mask"] == MISMATCH
    assert verdicts["pack"] == verdicts["bucket"] == EQUIVALENT


def test_cli_exit_codes_and_table(tiny_file, broken_mask_readout):
    r = CliRunner().invoke(main, ["verify", str(tiny_file)])
    assert r.exit_code == 1
    assert "| mask " in r.stdout and "MISMATCH" in r.stdout
    assert r.stderr == "Error: 1 strategy does not match per-sequence processing: mask\n"


def test_cli_passes_on_the_real_strategies(tiny_file):
    r = CliRunner().invoke(main, ["verify", str(tiny_file)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| strategy ")
    assert r.stdout.rstrip().endswith("All 5 strategies verified: 3 equivalent, 2 differ as designed, 0 mismatch.")
