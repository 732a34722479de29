"""verify: each strategy of a suite against a per-sequence reference of what it claims to compute, in float64
on the generic kernel and on the timed path (the run's device, precision and kernel)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.data.make import make_data
from lstmbench.measure.model import model_for, weights_checksum
from lstmbench.measure.verify import (
    AS_DESIGNED,
    EQUIVALENT,
    MISMATCH,
    TOLERANCES,
    Claim,
    RunCheck,
    check_run,
    checked_batches,
    claim_of,
    precision_of,
    verify_suite,
)
from lstmbench.strategies.strategy import Strategy, note_for, plan_epochs
from lstmbench.suite.load import StrategySpec, load_suite

CPU = torch.device("cpu")


def test_real_strategies_pass(tiny_file):
    verdicts = {v.strategy: v for v in verify_suite(load_suite(tiny_file))}
    assert [v.verdict for v in verdicts.values()] == [AS_DESIGNED, AS_DESIGNED, EQUIVALENT, EQUIVALENT, EQUIVALENT]
    # every strategy equals its own reference to rounding; naive and truncate depart from the plain one
    assert all(v.loss_rel_error < 1e-12 and v.grad_rel_error < 1e-12 for v in verdicts.values())
    assert verdicts["naive"].departure > 1e-1 and verdicts["truncate"].departure > 1e-1
    assert verdicts["mask"].departure < 1e-12
    assert verdicts["truncate"].note == "truncates to 6 tokens"
    assert all(v.batches == 3 for v in verdicts.values())


def test_bidirectional_mask_is_exact(tiny_file):
    """The reverse direction runs within each sequence's length: the masked readout equals each sequence alone."""
    verdicts = {v.strategy: v for v in verify_suite(load_suite(tiny_file, ["model.bidirectional=true"]))}
    assert verdicts["mask"].verdict == EQUIVALENT and verdicts["mask"].note == ""
    assert verdicts["mask"].grad_rel_error < 1e-12 and verdicts["mask"].departure < 1e-12
    assert verdicts["pack"].verdict == verdicts["bucket"].verdict == EQUIVALENT
    assert verdicts["truncate"].verdict == AS_DESIGNED and verdicts["truncate"].note == "truncates to 6 tokens"


def test_tagging_strategies_match_their_own_references(tiny_file):
    verdicts = {v.strategy: v for v in verify_suite(load_suite(tiny_file, ["data.task=tag"]))}
    assert [v.verdict for v in verdicts.values()] == [AS_DESIGNED, AS_DESIGNED, EQUIVALENT, EQUIVALENT, EQUIVALENT]
    assert verdicts["naive"].note == "scores the padded steps too"
    assert all(v.grad_rel_error < 1e-12 for v in verdicts.values())


def test_claims_compose_as_the_spec_does():
    def claim(readout, padding="batch", bidirectional=False, tag=False, **kw):
        return claim_of(StrategySpec(name="x", readout=readout, padding=padding, **kw), bidirectional, tag)

    assert claim("mask") == claim("pack", bidirectional=True) == claim("mask", tag=True) == Claim()
    assert claim("last", "global") == Claim(padded=True, read_padded_end=True)
    assert claim("last", "truncate", max_len=6) == Claim(cut=6, padded=True, read_padded_end=True)
    assert claim("last", "global", tag=True) == Claim(padded=True, pad_label=0)
    assert claim("mask", "truncate", bidirectional=True, max_len=6) == Claim(cut=6)
    assert claim("mask", bidirectional=True) == claim("mask", bidirectional=True, tag=True) == Claim()


def test_truncate_with_the_readout_last_is_as_designed(tiny_file, tiny_dict, tmp_path):
    from tests.conftest import write_suite

    tiny_dict["strategies"] = [{"name": "cut_last", "padding": "truncate", "max_len": 6, "readout": "last"}, "mask"]
    verdicts = verify_suite(load_suite(write_suite(tmp_path, tiny_dict, "composed.yaml")))
    assert [v.verdict for v in verdicts] == [AS_DESIGNED, EQUIVALENT]
    assert verdicts[0].note == "truncates to 6 tokens; reads the output after the padding"


@pytest.fixture
def broken_mask_readout(monkeypatch):
    """A deliberately broken readout: the masked strategies read one step before each sequence's end."""
    from lstmbench.measure.model import LSTMClassifier

    original = LSTMClassifier.forward

    def forward(self, tokens, lengths, readout):
        if readout == "mask":
            lengths = (lengths - 1).clamp_min(1)
        return original(self, tokens, lengths, readout)

    monkeypatch.setattr(LSTMClassifier, "forward", forward)


@pytest.fixture
def broken_truncation(monkeypatch):
    """A deliberately broken truncation: it cuts at max_len - 1 (the batch, its lengths and its labels)."""
    def kept_lengths(self, lengths):
        return np.minimum(lengths, self.spec.max_len - 1) if self.spec.padding == "truncate" else lengths

    monkeypatch.setattr(Strategy, "kept_lengths", kept_lengths)


def test_an_injected_mismatch_is_found(tiny_file, broken_mask_readout):
    verdicts = {v.strategy: v.verdict for v in verify_suite(load_suite(tiny_file))}
    # truncate reads through the same masked readout: against its own reference, it is caught too
    assert verdicts["mask"] == verdicts["truncate"] == MISMATCH
    assert verdicts["pack"] == verdicts["bucket"] == EQUIVALENT and verdicts["naive"] == AS_DESIGNED


def test_a_broken_truncation_is_a_mismatch(tiny_file, broken_truncation):
    suite = load_suite(tiny_file)
    verdicts = {v.strategy: v for v in verify_suite(suite)}
    assert verdicts["truncate"].verdict == MISMATCH and verdicts["truncate"].grad_rel_error > 1e-1
    assert [verdicts[n].verdict for n in ("naive", "mask", "pack", "bucket")] == [AS_DESIGNED] + [EQUIVALENT] * 3
    assert _checks(suite)["truncate"].verdict == MISMATCH


def _checks(suite, amp: str = "none") -> dict[str, RunCheck]:
    """check_run for every strategy of the suite, on the batches verify_suite checks (first seed, CPU)."""
    data = make_data(suite.data, 0).train
    model = model_for(suite.model, data, 0)
    checks = {}
    for spec in suite.strategies:
        strategy = Strategy(spec)
        batches = checked_batches(plan_epochs(strategy, data.lengths, 16, 1, 0), data.lengths, 3)
        checks[spec.name] = check_run(model, strategy, data, batches, CPU, amp, note_for(spec, suite))
    return checks


def test_float32_on_the_timed_path(tiny_file):
    """oneDNN (mask, truncate, naive) and the generic kernel (pack, bucket) in float32: exact strategies land
    near 1e-6, far below the tolerance."""
    checks = _checks(load_suite(tiny_file))
    assert [c.verdict for c in checks.values()] == [AS_DESIGNED, AS_DESIGNED, EQUIVALENT, EQUIVALENT, EQUIVALENT]
    assert {c.precision for c in checks.values()} == {"float32"}
    assert {c.tolerance for c in checks.values()} == {TOLERANCES["float32"]} == {1e-4}
    for c in checks.values():
        assert c.loss_rel_error < 1e-5 and c.grad_rel_error < 1e-5, c
        assert c.grad_rel_error > 1e-12  # float32 rounding, not float64: the run's own precision was used


def test_a_wrong_readout_is_a_mismatch_in_float32(tiny_file, broken_mask_readout):
    checks = _checks(load_suite(tiny_file))
    assert checks["mask"].verdict == checks["truncate"].verdict == MISMATCH
    assert checks["mask"].grad_rel_error > 1e-1 > TOLERANCES["float32"]
    assert checks["pack"].verdict == checks["bucket"].verdict == EQUIVALENT


def test_bf16_on_the_generic_kernel(tiny_file, broken_mask_readout):
    """bf16 autocast (oneDNN, which refuses bf16 LSTMs on CPUs without native bf16, switched off): exact
    strategies land near 2e-2, below the tolerance; the broken readout lands above it."""
    with torch.backends.mkldnn.flags(enabled=False):
        checks = _checks(load_suite(tiny_file), "bf16")
    assert {c.precision for c in checks.values()} == {"bf16"}
    for name in ("pack", "bucket"):
        assert 1e-4 < checks[name].grad_rel_error < TOLERANCES["bf16"] and checks[name].verdict == EQUIVALENT
    assert checks["mask"].verdict == MISMATCH and checks["mask"].grad_rel_error > 2 * TOLERANCES["bf16"]


def test_check_run_leaves_the_model_alone(tiny_file):
    suite = load_suite(tiny_file, ["model.num_layers=2", "model.dropout=0.5"])
    data = make_data(suite.data, 0).train
    model = model_for(suite.model, data, 0)
    before = weights_checksum(model)
    for spec in suite.strategies:
        strategy = Strategy(spec)
        check = check_run(model, strategy, data, plan_epochs(strategy, data.lengths, 16, 1, 0)[:2], CPU, "none",
                          note_for(spec, suite))
        assert check.verdict != MISMATCH, (spec.name, check)
    assert weights_checksum(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert model.lstm.dropout == 0.5 and model.training  # its copy dropped dropout, not the model


def test_precision_names_the_arithmetic(tiny_file):
    model = model_for(load_suite(tiny_file).model, make_data(load_suite(tiny_file).data, 0).train, 0)
    assert precision_of(model, CPU, "none") == "float32"
    assert precision_of(model, CPU, "bf16") == "bf16"
    assert precision_of(model, CPU, "bf16", "bfloat16") == "bf16"  # oneDNN's bf16 LSTM
    # cuDNN's LSTM under bf16 autocast runs float16: held to fp16's tolerance, loss-scaled
    assert precision_of(model, CPU, "bf16", "float16") == "fp16"
    assert precision_of(model.double(), CPU, "none") == "float64"


TIMED_HEADER = ("On the timed path (cpu, train.amp none): each strategy's batched loss and gradients against its "
                "own per-sequence reference in float64")


def test_cli_exit_codes_and_table(tiny_file, broken_mask_readout):
    r = CliRunner().invoke(main, ["verify", str(tiny_file)])
    assert r.exit_code == 1
    assert "| mask " in r.stdout and "MISMATCH" in r.stdout
    assert r.stderr == ("Error: 2 strategies do not match per-sequence processing: truncate, mask; 2 strategies "
                        "do not match per-sequence processing on the timed path (cpu, float32): truncate, mask\n")


def test_cli_keeps_the_single_mismatch_sentence(tiny_file, broken_mask_readout):
    r = CliRunner().invoke(main, ["verify", str(tiny_file), "--set", "strategies=[naive, mask, pack]"])
    assert r.exit_code == 1
    assert r.stderr == ("Error: 1 strategy does not match per-sequence processing: mask; 1 strategy does not match "
                        "per-sequence processing on the timed path (cpu, float32): mask\n")


def test_cli_passes_on_the_real_strategies(tiny_file):
    r = CliRunner().invoke(main, ["verify", str(tiny_file)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| strategy ")
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "strategy", "batches", "max rel. error, loss", "max rel. error, gradients", "vs. plain per-sequence", "verdict"]
    naive = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert naive[0] == "naive" and float(naive[3]) < 1e-12 and float(naive[4]) > 1e-1
    assert naive[5] == "differs as designed: reads the output after the padding"
    assert "All 5 strategies verified: 3 equivalent, 2 differ as designed, 0 mismatch." in lines
    timed = lines[lines.index(TIMED_HEADER) + 1:]
    assert [c.strip() for c in timed[0].split("|")[1:-1]] == [
        "strategy", "kernel", "precision", "max rel. error, loss", "max rel. error, gradients", "tolerance", "verdict"]
    rows = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in timed[2:7]}
    onednn = "onednn" if torch.backends.mkldnn.is_available() else "generic"  # padded batches on x86: oneDNN
    assert rows["mask"][:2] == [onednn, "float32"] and rows["pack"][:2] == ["generic", "float32"]
    assert rows["naive"][-2:] == ["1e-04", "differs as designed"] and rows["bucket"][-1] == "equivalent"
    assert r.stdout.rstrip().endswith("All 5 strategies checked on the timed path (cpu, float32): 3 equivalent, "
                                      "2 differ as designed, 0 mismatch.")
