"""Stage 5: one run gives a complete, self-consistent record; strategies of a seed train the same model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lstmbench.data.make import make_data
from lstmbench.measure.record import SCHEMA_VERSION
from lstmbench.measure.train import run_one
from lstmbench.results.rows import REQUIRED_KEYS
from lstmbench.suite.load import load_suite

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    from tests.conftest import TINY, write_suite

    suite = load_suite(write_suite(tmp_path_factory.mktemp("s"), TINY))
    return suite, {spec.name: run_one(suite, spec, 0, CPU) for spec in suite.strategies}


def test_record_is_complete_and_consistent(tiny_records):
    suite, records = tiny_records
    train = make_data(suite.data, 0).train
    for name, r in records.items():
        row = r.to_dict()
        assert set(REQUIRED_KEYS) <= set(row) and row["schema_version"] == SCHEMA_VERSION
        assert r.status == "ok" and r.error == ""
        optional = {"efficiency", "target_accuracy", "time_to_target_s", "time_to_target_cold_s", "compile_graphs",
                    "time_to_target_with_eval_s", "time_to_target_resolution_s", "reached_target",
                "compile_graph_breaks", "peak_mem_reserved_bytes",  # runner, target, CUDA
                "straggler_wait_fraction", "planned_wait_fraction", "position",  # DDP only; the runner's
                "until_stable_percent",  # run --until-stable only
                "tokens_to_target", "time_to_target_robust_s"}  # target only
        assert [k for k, v in row.items() if v is None and k not in optional] == [], name
        assert r.steps == 2 * 6  # ceil(96/16) batches a epoch, 2 epochs
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_naive_readout_after_padding_is_near_chance():
    suite = load_suite(ROOT / "suites" / "packing.yaml", ["train.epochs=1"])
    naive = run_one(suite, suite.strategies[0], 0, CPU)
    assert naive.strategy == "naive" and naive.eval_accuracy < 0.65
    assert naive.pad_fraction > 0.8


def test_warm_up_is_set_aside_and_cold_costs_are_consistent(tiny_records):
    suite, records = tiny_records
    for name, r in records.items():
        assert r.warmup_steps == 2 and r.warmup_time_s > 0, name  # 2 batches of another shuffle, whatever the shapes
        assert r.shape_warmup_s >= 0 and r.train_time_cold_s >= r.train_time_s, name
        if r.time_to_target_s is not None:
            assert r.time_to_target_cold_s >= r.time_to_target_s, name
    assert records["naive"].distinct_shapes == 1 and records["naive"].shape_warmup_s == 0  # one shape: no cost
    assert records["naive"].train_time_cold_s == records["naive"].train_time_s
    assert records["bucket"].distinct_shapes > 1
    if torch.backends.mkldnn.is_available():
        assert records["mask"].lstm_kernel == records["naive"].lstm_kernel == "onednn"
    assert records["pack"].lstm_kernel == records["bucket"].lstm_kernel == "generic"


def test_curve_and_time_to_target(tmp_path, tiny_dict):
    from tests.conftest import write_suite

    tiny_dict["train"].update(eval_every=3, target_accuracy=0.01)
    suite = load_suite(write_suite(tmp_path, tiny_dict))
    r = run_one(suite, suite.strategies[2], 0, CPU)
    assert [step for _, step, _ in r.curve] == [3, 6, 9, 12]
    times = [t for t, _, _ in r.curve]
    assert times == sorted(times) and times[-1] == r.train_time_s
    assert r.curve[-1][2] == r.eval_accuracy
    assert r.target_accuracy == 0.01 and r.time_to_target_s == times[0]  # any accuracy reaches 1%
    from lstmbench.measure.evaluation import time_to_target

    curve = [[1.0, 3, 0.5], [2.0, 6, 0.8], [3.0, 9, 0.95]]
    assert time_to_target(curve, 0.8) == 2.0 and time_to_target(curve, 0.99) is None
    assert time_to_target(curve, 0.0) is None


def test_order_shuffled_per_seed_and_efficiency_against_the_runs_own_unpadded_batches(tiny_file):
    from lstmbench.run.runner import plan_runs, run_suite
    from lstmbench.strategies.strategy import Strategy

    suite = load_suite(tiny_file, ["seeds=[0, 1, 2, 3]", "strategies=[naive, mask]"])
    plan = plan_runs(suite)
    orders = [tuple(p.spec.name for p in plan if p.seed == s) for s in suite.seeds]
    assert all(sorted(o) == ["ideal", "mask", "naive"] for o in orders)
    assert len(set(orders)) > 1  # not a fixed order, the ideal first
    assert [p.position for p in plan if p.seed == 0] == [0, 1, 2]
    assert orders == [tuple(p.spec.name for p in plan_runs(suite) if p.seed == s) for s in suite.seeds]  # seeded

    one = load_suite(tiny_file, ["seeds=[0]", "strategies=[naive, {truncate: {max_len: 6}}]"])
    records = {r.strategy: r for r in run_suite(one, isolate=False)}
    ideal, naive, cut = records["ideal"], records["naive"], records["truncate"]
    assert sorted(r.position for r in records.values()) == [0, 1, 2]
    assert ideal.pad_fraction == 0 and ideal.efficiency is None and ideal.reference_tokens_per_s is None
    assert ideal.eval_accuracy is None and ideal.curve == []
    assert ideal.init_checksum == naive.init_checksum == cut.init_checksum
    for r in (naive, cut):  # the reference: one epoch of the run's own batches, unpadded, timed in its process
        assert r.reference_steps == r.steps // one.train.epochs and len(r.reference_window_tokens_per_s) == min(8, r.reference_steps)
        assert r.efficiency == pytest.approx(r.tokens_per_s / r.reference_tokens_per_s)
    data = make_data(one.data, 0).train
    batch = np.arange(16)
    for name in ("naive", "truncate"):  # the same real tokens as the strategy feeds, less each row's remainder
        spec = next(s for s in one.strategies if s.name == name)
        strategy = Strategy(spec)
        unpadded, padded = strategy.unpadded(data, batch), strategy.collate(data, batch)
        assert padded.real_tokens - 16 < unpadded.real_tokens <= padded.real_tokens
        assert unpadded.padded_tokens == unpadded.real_tokens  # no padded cell at all


def test_the_runs_own_equivalence_check_is_in_its_row(tiny_records):
    suite, records = tiny_records
    verdicts = {name: (r.verified, r.verify_precision) for name, r in records.items()}
    assert verdicts["mask"] == verdicts["pack"] == ("equivalent", "float32")
    assert verdicts["naive"] == ("differs as designed", "float32")
    assert records["mask"].verify_grad_rel_error < 1e-5 < records["mask"].verify_tolerance


def test_windows_cover_the_timed_steps(tiny_records):
    from lstmbench.measure.loop import window_rates

    assert window_rates([10, 10, 10, 10], [1.0, 1.0, 2.0, 2.0], 2) == [10.0, 5.0]
    assert window_rates([10, 30], [1.0, 1.0], 8) == [10.0, 30.0]  # fewer steps than windows: one a step
    _, records = tiny_records
    r = records["mask"]
    assert len(r.window_tokens_per_s) == min(8, r.steps)
    # the run's tokens/s is the windows' tokens over their time: it lies within their range
    assert min(r.window_tokens_per_s) <= r.tokens_per_s <= max(r.window_tokens_per_s)


def test_the_ideal_can_be_switched_off(tiny_file):
    from lstmbench.run.runner import plan_runs

    off = load_suite(tiny_file, ["seeds=[0]", "strategies=[mask]", "ideal=false"])
    assert [p.spec.name for p in plan_runs(off)] == ["mask"]


def test_a_cpu_allocation_failure_in_a_step_names_the_batch_shape(tiny_file, monkeypatch):
    from lstmbench.errors import RunFailed
    from lstmbench.measure.loop import SEAMS

    def fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 17179869184 bytes.")

    suite = load_suite(tiny_file, ["train.warmup_steps=0"])
    monkeypatch.setattr(SEAMS, "step", fails)
    with pytest.raises(RunFailed) as e:
        run_one(suite, suite.strategies[2], 0, CPU)
    assert e.value.kind == "oom"
    assert str(e.value).startswith("out of memory at step 0 on a batch of shape (16, ")
