"""Train/eval loop, MLPerf's rule: until the target under a time cap; time to target on MLPerf's clock and how
finely it is read; accuracy by length."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmbench.data.make import make_data
from lstmbench.errors import SuiteError
from lstmbench.measure.train import accuracy_by_length, resolution, run_one
from lstmbench.suite.load import load_suite
from tests.conftest import TINY, write_suite

CPU = torch.device("cpu")


def _suite(tmp_path, **train):
    return load_suite(write_suite(tmp_path, {**TINY, "strategies": ["mask"], "ideal": False,
                                             "train": {**TINY["train"], **train}}))


def test_until_target_stops_at_the_first_evaluation_that_reaches_it(tmp_path):
    suite = _suite(tmp_path, epochs=30, target_accuracy=0.7, until_target=True, eval_every=3)
    r = run_one(suite, suite.strategies[0], 0, CPU)
    assert r.status == "ok" and r.reached_target is True
    assert r.steps < 30 * 6 and r.steps % 3 == 0  # stopped at an evaluation, long before the last epoch
    assert [n for _, n, _ in r.curve] == list(range(3, r.steps + 1, 3))  # the stop was evaluated once, not twice
    assert r.curve[-1][2] >= 0.7 > max(a for _, _, a in r.curve[:-1])
    assert r.time_to_target_s == r.curve[-1][0]
    assert r.time_to_target_s <= r.time_to_target_cold_s < r.time_to_target_with_eval_s
    assert r.time_to_target_resolution_s == pytest.approx(r.curve[-1][0] - (r.curve[-2][0] if len(r.curve) > 1
                                                                              else 0.0))
    assert r.eval_periodic_time_s > 0 and r.eval_accuracy == r.curve[-1][2]
    assert r.samples_per_s == pytest.approx(16 * r.steps / r.train_time_s, rel=0.2)  # batches of 16 (one of 0)


def test_a_run_that_hits_the_cap_is_an_ordinary_row(tmp_path):
    suite = _suite(tmp_path, epochs=50, target_accuracy=1.0, until_target=True, max_time_s=0.05, eval_every=2)
    r = run_one(suite, suite.strategies[0], 0, CPU)
    assert r.status == "ok" and r.reached_target is False and r.time_to_target_s is None
    assert r.steps < 50 * 6 and r.train_time_cold_s >= 0.05  # stopped at the first evaluation past the cap
    assert r.curve[-1][1] == r.steps and r.steps % 2 == 0  # it stopped at an evaluation
    assert "target not reached" in r.summary()


def test_without_until_target_every_epoch_runs_and_reached_is_recorded(tmp_path):
    suite = _suite(tmp_path, target_accuracy=0.01)
    r = run_one(suite, suite.strategies[0], 0, CPU)
    assert r.steps == 2 * 6 and r.reached_target is True and r.curve[-1][1] == 12
    assert r.time_to_target_resolution_s == pytest.approx(r.time_to_target_s)  # one evaluation: read at the end


@pytest.mark.parametrize("train, sentence", [
    ({"until_target": True, "target_accuracy": 0},
     "train.until_target: needs train.target_accuracy: the accuracy to train until"),
    ({"max_time_s": 60}, "train.max_time_s: caps training with until_target: true only; without it, epochs decide"),
    ({"max_time_s": -1}, "train.max_time_s: must be >= 0, got -1.0"),
])
def test_until_target_settings_are_checked(tmp_path, train, sentence):
    with pytest.raises(SuiteError) as e:
        _suite(tmp_path, **train)
    assert str(e.value).endswith(sentence)


def test_until_target_is_refused_under_ddp(tmp_path):
    raw = {**TINY, "launch": {"nproc": 2}, "train": {**TINY["train"], "until_target": True}}
    with pytest.raises(SuiteError, match=r"train.until_target: is for one process; under DDP"):
        load_suite(write_suite(tmp_path, raw))


def test_accuracy_by_length_covers_the_held_out_set_once(tmp_path):
    suite = _suite(tmp_path)
    r = run_one(suite, suite.strategies[0], 0, CPU)
    held_out = make_data(suite.data, 0).eval
    bins = r.accuracy_by_length
    assert len(bins) == 4  # 48 sequences: about 10 a bin
    assert sum(count for _, _, count, _ in bins) == len(held_out) == 48
    assert all(low <= high for low, high, _, _ in bins)
    assert all(a[1] < b[0] for a, b in zip(bins, bins[1:]))  # ascending, no length in two bins
    assert bins[0][0] == held_out.lengths.min() and bins[-1][1] == held_out.lengths.max()
    weighted = sum(count * acc for _, _, count, acc in bins) / 48
    assert weighted == pytest.approx(r.eval_accuracy, abs=1e-12)


def test_accuracy_by_length_bins():
    class Data:
        tagged = False
        lengths = np.array([5, 5, 5, 5, 9, 9, 12, 12, 12, 30] * 3)

    hits = np.array([1, 0, 1, 1, 1, 1, 0, 0, 0, 1] * 3)
    bins = accuracy_by_length(Data, hits)  # 30 sequences: 3 bins; equal lengths stay together
    assert bins == [[5, 5, 12, 0.75], [9, 12, 15, 0.4], [30, 30, 3, 1.0]]
    Data.lengths = np.full(7, 4)
    assert accuracy_by_length(Data, np.array([1, 1, 0, 1, 0, 1, 1])) == [[4, 4, 7, 5 / 7]]


def test_resolution():
    curve = [[1.0, 10, 0.5], [2.5, 20, 0.8], [4.0, 30, 0.95]]
    assert resolution(curve, 0.9) == pytest.approx(1.5)
    assert resolution(curve, 0.4) == 1.0  # the first evaluation: read from the start
    assert resolution(curve, 0.99) is None and resolution(curve, 0.0) is None
