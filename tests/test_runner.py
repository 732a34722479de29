"""The runner and process model: runs forked from the forkserver equal spawned ones, each seed's data is made
once and is the same for every strategy, --until-stable stops when throughput is stable, the harness overhead."""
from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest

from lstmbench.data.cache import SeedData, load
from lstmbench.data.make import make_data
from lstmbench.measure.record import RunRecord
from lstmbench.measure.reference import REFERENCE_MIN_STEPS, reference_sample
from lstmbench.results.rows import Overhead, harness_overhead
from lstmbench.run import runner
from lstmbench.run.worker import run_isolated
from lstmbench.suite.load import load_suite
from tests.conftest import TINY, write_suite
from tests.factories import record


@pytest.fixture
def tiny(tmp_path):
    raw = copy.deepcopy(TINY)
    raw["strategies"] = ["mask", "pack"]
    raw["train"]["eval_every"] = 3
    return load_suite(write_suite(tmp_path, raw))


def _same_run(a: RunRecord, b: RunRecord) -> None:
    assert a.status == b.status == "ok", (a.error, b.error)
    for key in ("suite_hash", "strategy", "seed", "init_checksum", "data_checksum", "steps", "real_tokens",
                "padded_tokens", "eval_accuracy", "eval_accuracy_exact", "verified", "threads"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.final_loss == pytest.approx(b.final_loss, rel=1e-6)
    assert [acc for _, _, acc in a.curve] == [acc for _, _, acc in b.curve]


@pytest.mark.slow
def test_forkserver_run_equals_a_spawned_one(tiny):
    spec = tiny.strategies[0]
    with SeedData() as cache:
        folder = str(cache.folder(tiny, 0))
        forked = run_isolated(tiny, spec, 0, "cpu", data_dir=folder, start="forkserver")
        spawned = run_isolated(tiny, spec, 0, "cpu", start="spawn")  # makes its own data
    _same_run(forked, spawned)
    assert (forked.start_method, spawned.start_method) == ("forkserver", "spawn")
    assert forked.baseline_rss_bytes > 0 and forked.peak_mem_bytes >= forked.baseline_rss_bytes


def test_seed_data_round_trip_and_cleanup(tiny):
    made = make_data(tiny.data, 1, tiny.origin)
    with SeedData() as cache:
        folder = cache.folder(tiny, 1)
        assert cache.folder(tiny, 1) == folder  # made once
        loaded = load(folder)
        assert loaded.checksum() == made.checksum()
        for name in ("tokens", "offsets", "labels", "padded"):
            assert np.array_equal(getattr(loaded.train, name), getattr(made.train, name))
            assert not getattr(loaded.eval, name).flags.writeable  # memory-mapped read-only: shared, not copied
        assert (loaded.train.num_classes, loaded.train.vocab_size) == (made.train.num_classes, made.train.vocab_size)
        other = cache.folder(tiny, 0)
        assert other != folder and not folder.exists()  # one seed's files at a time
    assert not other.exists()
    assert make_data(tiny.data, 0).checksum() != made.checksum()


def test_every_strategy_of_a_seed_trains_on_the_same_data(tiny):
    records = list(runner.run_suite(tiny, isolate=False))
    sums = {(r.seed, r.strategy): r.data_checksum for r in records}
    assert len(records) == 6 and all(r.status == "ok" for r in records)  # 2 strategies + the ideal, 2 seeds
    for seed in (0, 1):
        assert len({v for (s, _), v in sums.items() if s == seed}) == 1
    assert sums[(0, "mask")] != sums[(1, "mask")]
    assert sums[(0, "mask")] == make_data(tiny.data, 0).checksum()


def _fake_runs(monkeypatch, tokens_per_s):
    """run_inline replaced: each run's tokens/s from `tokens_per_s(strategy, seed)`, nothing trained."""
    calls = []

    def fake(suite, spec, seed, device, progress=None, data=None):
        calls.append((spec.name, seed))
        return record(suite=suite.name, suite_hash=suite.hash, strategy=spec.name, batching=spec.batching,
                      padding=spec.padding, readout=spec.readout, seed=seed, tokens_per_s=tokens_per_s(spec.name, seed))

    monkeypatch.setattr(runner, "run_inline", fake)
    return calls


def test_until_stable_stops_at_three_seeds_without_noise(tiny, monkeypatch):
    calls = _fake_runs(monkeypatch, lambda name, seed: 1000.0)
    records = list(runner.run_suite(tiny, isolate=False, until_stable=runner.UntilStable(2.0, 8)))
    assert sorted({s for _, s in calls}) == [0, 1, 2]  # the suite's seeds 0 and 1, then seed 2
    assert len(records) == 9 and {r.until_stable for r in records if r.seed == 2} == {"stable"}
    assert {r.until_stable for r in records if r.seed < 2} == {""}


def test_until_stable_runs_to_the_limit_with_noise(tiny, monkeypatch):
    rng = np.random.default_rng(0)
    calls = _fake_runs(monkeypatch, lambda name, seed: 1000.0 * rng.lognormal(0, 0.3))
    records = list(runner.run_suite(tiny, isolate=False, until_stable=runner.UntilStable(2.0, 5)))
    assert sorted({s for _, s in calls}) == [0, 1, 2, 3, 4] and len(records) == 15
    assert {r.until_stable for r in records if r.seed == 4} == {"limit"}
    assert {r.until_stable_percent for r in records} == {2.0}


def test_until_stable_stops_each_strategy_on_its_own(tiny, monkeypatch):
    rng = np.random.default_rng(1)
    calls = _fake_runs(monkeypatch, lambda name, seed: 1000.0 * (rng.lognormal(0, 0.3) if name == "pack" else 1))
    records = list(runner.run_suite(tiny, isolate=False, until_stable=runner.UntilStable(5.0, 6)))
    assert [s for n, s in calls if n == "mask"] == [0, 1, 2]
    assert [s for n, s in calls if n == "pack"] == [0, 1, 2, 3, 4, 5]
    assert [r.until_stable for r in records if r.strategy == "pack"][-1] == "limit"


def test_reference_sample_is_bounded_and_spread():
    plan = [np.array([i]) for i in range(400)]
    sample = reference_sample(plan, per_epoch=100)  # 4 epochs: 400 steps, an eighth is 50 of the first 100
    assert len(sample) == 50 and sample[0][0] == 0 and sample[-1][0] == 99
    assert len(reference_sample(plan[:40], per_epoch=40)) == REFERENCE_MIN_STEPS
    assert len(reference_sample(plan[:10], per_epoch=10)) == 10  # a short epoch: all of it


def test_harness_overhead_sentence():
    rows = [{"status": "ok", "train_time_cold_s": 60.0, "eval_time_s": 5.0, "eval_periodic_time_s": 15.0},
            {"status": "ok", "train_time_cold_s": 20.0, "eval_time_s": float("nan"), "eval_periodic_time_s": None},
            {"status": "error", "train_time_cold_s": None}]
    cost = harness_overhead(rows, 130.0)
    assert cost == Overhead(130.0, 80.0, 20.0)
    assert cost.sentence() == ("harness overhead: 23% of wall time (wall 130.0 s; training 80.0 s and evaluation "
                               "20.0 s in the rows: 1.30x)")
    assert harness_overhead(rows[2:], 10.0) is None


def test_default_start_is_the_forkserver_on_posix():
    from lstmbench.run.worker import default_start

    assert default_start() == ("forkserver" if os.name == "posix" else "spawn")
    assert dataclasses.fields(runner.UntilStable)[0].name == "percent"


def test_until_stable_refuses_what_it_cannot_share(tiny_file):
    from click.testing import CliRunner

    from lstmbench.cli import main

    def run(*args):
        return CliRunner().invoke(main, ["run", str(tiny_file), *args])

    r = run("--max-seeds", "5")
    assert r.exit_code == 2 and r.output.strip() == "Error: --max-seeds limits --until-stable; give --until-stable P too"
    r = run("--until-stable", "5", "--shard", "1/2")
    assert r.exit_code == 2 and r.output.strip() == ("Error: --until-stable decides the seeds as it goes, which "
                                                     "--shard cannot share; run it alone")
    r = run("--until-stable", "0")
    assert r.exit_code == 2 and "0.0 is not in the range x>0" in r.output
    r = run("--until-stable", "5", "--max-seeds", "2")
    assert r.exit_code == 2 and "--max-seeds" in r.output


def test_a_killed_runs_cache_is_removed_by_the_next(tiny, tmp_path, monkeypatch):
    import subprocess
    import sys

    from lstmbench.data import cache as datacache

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    monkeypatch.setattr(datacache.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(datacache, "ROOM", float("inf"))  # not /dev/shm: the test's own folder
    orphan = tmp_path / f"{datacache.PREFIX}{dead}-abc"
    orphan.mkdir()
    mine = tmp_path / f"{datacache.PREFIX}{os.getpid()}-keep"
    mine.mkdir()
    with SeedData() as cache:
        assert cache.folder(tiny, 0).parent.parent == tmp_path
        assert not orphan.exists() and mine.exists()


def test_report_names_stable_and_limited_strategies():
    import pandas as pd

    from lstmbench.report.summary import stability_note

    rows = pd.DataFrame([{"strategy": s, "seed": k, "until_stable": mark, "until_stable_percent": 3.0}
                         for s, marks in (("mask", ["", "", "stable"]), ("pack", ["", "", "", "limit"]))
                         for k, mark in enumerate(marks)])
    assert stability_note(rows) == ("Until stable (tokens/s within +-3% of the median): stable: mask (3 seeds). "
                                    "Not stable at the seed limit: pack (4 seeds).")
    assert stability_note(rows.assign(until_stable="")) == ""
