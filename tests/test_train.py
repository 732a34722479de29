"""Stage 5: one run gives a complete, self-consistent record; strategies of a seed train the same model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lstmbench.data import make_data
from lstmbench.records import REQUIRED_KEYS, SCHEMA_VERSION
from lstmbench.suite import load_suite
from lstmbench.train import run_one

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    from .conftest import TINY, write_suite

    suite = load_suite(write_suite(tmp_path_factory.mktemp("s"), TINY))
    return suite, {spec.name: run_one(suite, spec, 0, CPU) for spec in suite.strategies}


def test_record_is_complete_and_consistent(tiny_records):
    suite, records = tiny_records
    train = make_data(suite.data, 0).train
    for name, r in records.items():
        row = r.to_dict()
        assert set(REQUIRED_KEYS) <= set(row) and row["schema_version"] == SCHEMA_VERSION
        assert r.status == "ok" and r.error == ""
        assert None not in row.values(), name
        assert r.steps == 2 * 6 and r.warmup_steps == 2  # ceil(96/16) batches a epoch, 2 epochs
        kept = np.minimum(train.lengths, 6) if name == "truncate" else train.lengths
        assert r.real_tokens == 2 * kept.sum()
        assert r.pad_fraction == pytest.approx(1 - r.real_tokens / r.padded_tokens)
        assert 0 < r.data_time_s < r.train_time_s
        assert r.tokens_per_s == pytest.approx(r.real_tokens / r.train_time_s)
        assert r.samples_per_s == pytest.approx(2 * 96 / r.train_time_s)
        assert r.step_time_p10_s <= r.step_time_median_s <= r.step_time_p90_s
        assert 0 <= r.eval_accuracy <= 1 and 0 <= r.eval_accuracy_exact <= 1
        assert r.peak_mem_bytes > 0 and np.isfinite(r.final_loss)
        assert r.env["torch"] == torch.__version__ and r.env["threads"] == r.threads
        assert r.config["name"] == "tiny" and r.suite_hash == suite.hash
    naive = records["naive"]
    assert naive.padded_tokens == 2 * 96 * train.max_length  # every batch padded to the data set's max


def test_strategies_of_a_seed_start_from_the_same_weights(tiny_records):
    _, records = tiny_records
    assert len({r.init_checksum for r in records.values()}) == 1


def test_exact_strategies_train_the_same_model(tiny_records):
    """mask and pack see the same batches and compute the same gradients: the same trained model."""
    _, r = tiny_records
    assert r["mask"].final_loss == pytest.approx(r["pack"].final_loss, rel=1e-4)
    assert r["mask"].eval_loss_exact == pytest.approx(r["pack"].eval_loss_exact, rel=1e-4)
    assert r["mask"].eval_accuracy == r["pack"].eval_accuracy == r["pack"].eval_accuracy_exact


def test_the_marker_task_separates_the_strategies():
    """On the default suite (one seed): exact strategies learn it, truncation loses the far markers, and a
    readout after the padding is no better than chance."""
    suite = load_suite(ROOT / "suites" / "packing.yaml")
    specs = {s.name: s for s in suite.strategies}
    mask = run_one(suite, specs["mask"], 0, CPU)
    truncate = run_one(suite, specs["truncate"], 0, CPU)
    assert mask.eval_accuracy >= 0.9 and mask.eval_accuracy == mask.eval_accuracy_exact
    assert truncate.eval_accuracy < truncate.eval_accuracy_exact - 0.02
    assert truncate.eval_accuracy < mask.eval_accuracy
    assert 0.6 < mask.pad_fraction < 0.9 and truncate.pad_fraction < mask.pad_fraction


def test_naive_readout_after_padding_is_near_chance():
    suite = load_suite(ROOT / "suites" / "packing.yaml", ["train.epochs=1"])
    naive = run_one(suite, suite.strategies[0], 0, CPU)
    assert naive.strategy == "naive" and naive.eval_accuracy < 0.65
    assert naive.pad_fraction > 0.8
