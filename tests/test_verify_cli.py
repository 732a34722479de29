"""`lstmbench verify` without the suite's GPU, and its two checks sharing their float64 references."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import lstmbench.measure.verify as verify
from lstmbench.cli import main
from lstmbench.suite.load import load_suite


def invoke(*args: str):
    return CliRunner().invoke(main, ["verify", *map(str, args)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the line given without a GPU")
@pytest.mark.parametrize("device", [["--set", "device=cuda"], ["--device", "cuda"]])
def test_a_suite_on_cuda_without_a_gpu_is_refused_at_once(tiny_file, device):
    """Skipping its timed path would pass a GPU job (the nightly's) that checked nothing of what it times."""
    r = invoke(tiny_file, *device)
    assert (r.exit_code, r.stdout) == (2, "")  # before the float64 check, which can take minutes
    assert r.stderr == ("Error: device cuda was asked for, but torch sees no CUDA GPU "
                        "(torch.cuda.is_available() is False)\n")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the line given without a GPU")
def test_a_suite_on_auto_still_skips_what_this_machine_cannot_time(tiny_file):
    r = invoke(tiny_file, "--device", "auto", "--set", "train.amp=fp16", "--set", "strategies=[mask]")
    assert r.exit_code == 0, r.output
    assert "All 1 strategies verified: 1 equivalent, 0 differ as designed, 0 mismatch." in r.stdout
    assert r.stdout.endswith("\nOn the timed path: skipped: train.amp fp16 needs a CUDA device, and this suite runs "
                             "on cpu.\n")


def test_each_float64_reference_is_computed_once(tiny_file, monkeypatch):
    """The timed path computes no reference of its own (the generic check computed them all, on the same model
    and batches), strategies of one batching share their plain ones, and the verdicts are those of the two
    checks computed apart."""
    suite = load_suite(tiny_file, ["strategies=[naive, mask, bucket]"])
    calls = []
    computed = verify.reference
    monkeypatch.setattr(verify, "reference", lambda model, run: calls.append(len(run)) or computed(model, run))
    checks = verify.SuiteChecks(suite)
    generic = checks.generic()
    # 12 asked for: 3 strategies x 3 batches, and naive's own claim on its 3; 8 of them distinct (naive and mask
    # share their batches, random ones; bucket's longest batch is one of its first two)
    assert len(calls) == 8
    timed = checks.timed()
    assert len(calls) == 8
    assert verify.verify_suite(suite) == generic and verify.verify_timed(suite) == timed
    assert len(calls) == 24
