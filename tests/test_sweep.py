"""Sweeps: one variant of the suite per combination of swept values, rows tagged, a crossover in the report."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.errors import SuiteError
from lstmbench.suite.load import expand_sweep, load_suite


def test_expand_gives_one_variant_per_combination(tiny_file):
    suite = load_suite(tiny_file, ["sweep={train.batch_size: [8, 16], data.lengths.sigma: [0.2, 1.0]}"])
    variants = expand_sweep(suite)
    assert [v.point for v in variants] == [
        {"train.batch_size": 8, "data.lengths.sigma": 0.2}, {"train.batch_size": 8, "data.lengths.sigma": 1.0},
        {"train.batch_size": 16, "data.lengths.sigma": 0.2}, {"train.batch_size": 16, "data.lengths.sigma": 1.0}]
    assert [(v.train.batch_size, v.data.lengths.sigma) for v in variants] == [(8, 0.2), (8, 1.0), (16, 0.2),
                                                                            (16, 1.0)]
    assert len({v.hash for v in variants}) == 4 and all(not v.sweep for v in variants)
    assert expand_sweep(load_suite(tiny_file)) == [load_suite(tiny_file)]


@pytest.mark.parametrize("sweep, message", [
    ("{train.batch_size: [8, 0]}",
     "sweep.train.batch_size: must be > 0, got 0 (in the variant {'train.batch_size': 0})"),
    ("{train.bogus: [1]}", "sweep.train.bogus: unknown key; valid: amp, batch_size, compile, cudnn_benchmark, "
                           "epochs, eval_batch_size, eval_every, loader, lr, max_time_s, target_accuracy, until_target, "
                           "warmup_steps (in the variant {'train.bogus': 1})"),
    ("{train.lr: 0.1}", "sweep.train.lr: must be a non-empty list of values, got 0.1"),
    ("{a: [1], b: [1], c: [1]}", "sweep: varies at most two keys, got 3"),
    ("[1, 2]", "sweep: must be a mapping of key paths to lists of values, got a list"),
])
def test_bad_sweeps(tiny_file, sweep, message):
    with pytest.raises(SuiteError) as e:
        load_suite(tiny_file, [f"sweep={sweep}"])
    assert str(e.value) == f"{tiny_file}: {message}"


@pytest.mark.slow
def test_run_and_report_a_sweep(tiny_file, tmp_path):
    out = tmp_path / "results"
    r = CliRunner().invoke(main, ["run", str(tiny_file), "--inline", "--out", str(out), "--set", "seeds=[0]",
                                  "--set", "strategies=[naive, mask]", "--set", "sweep={train.batch_size: [8, 32]}"])
    assert r.exit_code == 0, r.output
    assert "tiny: 2 strategies + the ideal x 1 seeds x 2 sweep points = 6 runs on cpu; rows go to" in r.stderr
    (rows_file,) = (out / "tiny").glob("*.jsonl")
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert [(x["strategy"], x["sweep"], x["batch_size"]) for x in rows] == [  # seed 0's shuffled order, per point
        ("naive", {"train.batch_size": 8}, 8), ("mask", {"train.batch_size": 8}, 8),
        ("ideal", {"train.batch_size": 8}, 8), ("naive", {"train.batch_size": 32}, 32),
        ("mask", {"train.batch_size": 32}, 32), ("ideal", {"train.batch_size": 32}, 32)]
    assert len({x["suite_hash"] for x in rows}) == 2

    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "## tiny [train.batch_size=8] on cpu" in r.stdout
    assert "## Crossover: speed-up against naive by train.batch_size" in r.stdout
    assert (out / "tiny" / "report" / "crossover.png").read_bytes()[:4] == b"\x89PNG"
    r = CliRunner().invoke(main, ["run", str(tiny_file), "--inline", "--out", str(out), "--set", "seeds=[0]",
                                  "--set", "strategies=[naive, mask]", "--set", "sweep={train.batch_size: [8, 32]}",
                                  "--resume"])
    assert r.exit_code == 0 and r.stdout.strip() == "Nothing to run."
