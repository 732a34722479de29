"""The tag task: one label per step, loss and accuracy over real steps only, equivalence as for classify."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmbench.data.make import IGNORE, make_data
from lstmbench.errors import SuiteError
from lstmbench.measure.model import model_for
from lstmbench.measure.train import run_one
from lstmbench.measure.verify import check_batch
from lstmbench.strategies.strategy import Strategy, plan_epochs
from lstmbench.suite.load import PRESETS, DataConfig, Lengths, ModelConfig, StrategySpec, load_suite, suite_from_dict

DATA = DataConfig(task="tag", train_size=48, eval_size=8, vocab_size=12, lengths=Lengths(median=10, min=2, max=40))


def test_step_labels_are_a_running_or_of_the_marker():
    data = make_data(DATA, 0).train
    marker = DATA.vocab_size - 1
    for i in range(len(data)):
        seq, n = data.sequence(i), data.lengths[i]
        expected = np.maximum.accumulate(seq == marker).astype(int)
        assert data.padded_tags[i, :n].tolist() == expected.tolist()
        assert (data.padded_tags[i, n:] == IGNORE).all()
        assert expected[-1] == data.labels[i]  # the last step's label is the sequence's


def _strategy(name: str, **kw) -> Strategy:
    return Strategy(StrategySpec(name=name, **{**PRESETS[name], **kw}))


@pytest.mark.parametrize("name", ["mask", "pack", "bucket", "sorted_pack", "token_budget"])
def test_padding_free_tagging_equals_per_sequence_processing(name):
    data = make_data(DATA, 0).train
    model = model_for(ModelConfig(embed_dim=6, hidden_size=8), data, seed=0).double()
    strategy = _strategy(name, **({"max_tokens": 120} if name == "token_budget" else {}))
    for idx in plan_epochs(strategy, data.lengths, 16, 1, 0)[:2]:
        result = check_batch(model, strategy, data, idx)
        assert result.holds(1e-10), result


@pytest.mark.parametrize("name, kw", [("naive", {}), ("truncate", {"max_len": 5})])
def test_naive_and_truncated_tagging_differ(name, kw):
    data = make_data(DATA, 0).train
    model = model_for(ModelConfig(embed_dim=6, hidden_size=8), data, seed=0).double()
    strategy = _strategy(name, **kw)
    idx = plan_epochs(strategy, data.lengths, 16, 1, 0)[0]
    assert not check_batch(model, strategy, data, idx).holds(1e-6)
    note = "scores the padded steps too" if name == "naive" else "truncates to 5 tokens"
    from lstmbench.strategies.strategy import computation_note
    assert computation_note(strategy.spec, tag=True) == note
    batch = strategy.collate(data, idx)
    scored = int((batch.labels != IGNORE).sum())
    assert scored == (batch.padded_tokens if name == "naive" else batch.real_tokens)  # naive scores padding


def test_a_tagging_run(tiny_file):
    suite = load_suite(tiny_file, ["data.task=tag", "seeds=[0]"])
    specs = {s.name: s for s in suite.strategies}
    mask, pack, truncate = (run_one(suite, specs[n], 0, torch.device("cpu")) for n in ("mask", "pack", "truncate"))
    assert mask.status == pack.status == truncate.status == "ok"
    assert mask.final_loss == pytest.approx(pack.final_loss, rel=1e-4)
    assert mask.eval_accuracy == pack.eval_accuracy == mask.eval_accuracy_exact
    # truncation cannot tag the steps past its cut, and they count as wrong
    held_out = make_data(suite.data, 0).eval
    beyond = np.maximum(held_out.lengths - 6, 0).sum() / held_out.lengths.sum()
    assert truncate.eval_accuracy <= 1 - beyond + 1e-9


def test_tag_needs_the_synthetic_source():
    with pytest.raises(SuiteError, match="data.task: tag needs a label for every step, which only the synthetic "
                                         "source has, not reviews"):
        suite_from_dict({"name": "x", "strategies": ["mask"], "data": {"source": "reviews", "task": "tag"}})
