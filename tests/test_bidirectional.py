"""A bidirectional LSTM with the masked readout: exact per sequence (its reverse direction runs over each sequence
reversed within its length), on the fused kernel, with the nn.LSTM's own parameters; unidirectional unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmbench.data.make import IGNORE, make_data
from lstmbench.measure.model import (
    LSTMClassifier,
    build_model,
    loss_of,
    model_for,
    weights_checksum,
    within_length_reversal,
)
from lstmbench.measure.probes import KernelProbe
from lstmbench.measure.verify import EQUIVALENT, verify_suite
from lstmbench.strategies.strategy import Strategy, plan_epochs
from lstmbench.suite.load import PRESETS, DataConfig, Lengths, ModelConfig, StrategySpec, load_suite

DATA = {task: DataConfig(task=task, train_size=48, eval_size=8, vocab_size=12,
                         lengths=Lengths(median=10, sigma=0.8, min=2, max=40)) for task in ("classify", "tag")}


def _model(task: str, layers: int, dtype: torch.dtype = torch.float64, bidirectional: bool = True):
    data = make_data(DATA[task], 0).train
    cfg = ModelConfig(embed_dim=6, hidden_size=8, num_layers=layers, bidirectional=bidirectional)
    return data, model_for(cfg, data, seed=0).to(dtype)


def _grads(model: LSTMClassifier, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*model.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, params)))


@pytest.mark.parametrize("task", ["classify", "tag"])
@pytest.mark.parametrize("layers", [1, 2])
def test_mask_equals_each_sequence_alone(task, layers):
    """Loss and the gradient of every parameter, float64: the padded batch against each sequence run alone,
    unpadded, through the model's nn.LSTM (the module itself, not the layer-by-layer path under test)."""
    data, model = _model(task, layers)
    strategy = Strategy(StrategySpec(name="mask", **PRESETS["mask"]))
    idx = next(i for i in plan_epochs(strategy, data.lengths, 16, 1, 0) if data.lengths.argmax() in i)
    batch = strategy.collate(data, idx)
    assert len(set(batch.lengths.tolist())) > 3  # really padded
    got = _grads(model, loss_of(model(batch.tokens, batch.lengths, "mask"), batch.labels, "sum"))

    total = 0
    for row, n in enumerate(batch.lengths.tolist()):
        out, _ = model.lstm(model.embed(batch.tokens[row:row + 1, :n]))
        hidden = model.lstm.hidden_size
        state = out if model.tag else torch.cat([out[:, -1, :hidden], out[:, 0, hidden:]], dim=1)
        labels = batch.labels[row:row + 1, :n] if model.tag else batch.labels[row:row + 1]
        total = total + loss_of(model.head(state), labels, "sum")
    want = _grads(model, total)
    assert set(got) == set(want) and len(got) == 1 + 8 * layers + 2  # every parameter, both directions
    for name in want:
        scale = float(want[name].abs().max())
        assert scale > 0 and float((got[name] - want[name]).abs().max()) <= 1e-10 * scale, name


@pytest.mark.parametrize("overrides", [[], ["model.num_layers=2"], ["data.task=tag"],
                                       ["model.num_layers=2", "data.task=tag"]])
def test_verify_calls_bidirectional_mask_equivalent(tiny_file, overrides):
    suite = load_suite(tiny_file, ["model.bidirectional=true", *overrides,
                                   "strategies=[mask, pack, {name: bucket-mask, batching: bucket, padding: batch, "
                                   "readout: mask}]"])
    verdicts = verify_suite(suite)
    assert [v.verdict for v in verdicts] == [EQUIVALENT] * 3
    assert all(v.note == "" and max(v.loss_rel_error, v.grad_rel_error, v.departure) < 1e-12 for v in verdicts)


def test_mask_equals_pack_on_a_padded_batch():
    data, model = _model("tag", 2)
    strategy = Strategy(StrategySpec(name="pack", **PRESETS["pack"]))  # its batch sorted, as packing needs
    batch = strategy.collate(data, np.arange(16))
    real = batch.labels != IGNORE
    mask, pack = (model(batch.tokens, batch.lengths, r) for r in ("mask", "pack"))
    torch.testing.assert_close(mask[real], pack[real], rtol=1e-12, atol=1e-12)


def test_reversal_within_length_keeps_the_padding_in_place():
    index = within_length_reversal(torch.tensor([3, 1, 5]), 5)
    assert index.tolist() == [[2, 1, 0, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]
    assert torch.equal(index.gather(1, index), torch.arange(5).expand(3, 5))  # its own inverse


def test_unidirectional_mask_is_unchanged(monkeypatch):
    """Same ops as before: one nn.LSTM call, the forward output gathered at each true end, bit for bit."""
    data, model = _model("classify", 2, torch.float32, bidirectional=False)
    batch = Strategy(StrategySpec(name="mask", **PRESETS["mask"])).collate(data, np.arange(16))
    monkeypatch.setattr("lstmbench.measure.model.both_directions", lambda *a: pytest.fail("bidirectional path taken"))
    out, _ = model.lstm(model.embed(batch.tokens))
    expected = model.head(out[torch.arange(16), batch.lengths - 1])
    assert torch.equal(model(batch.tokens, batch.lengths, "mask"), expected)


def test_parameters_and_checksum_are_nn_lstms_own():
    cfg = ModelConfig(embed_dim=6, hidden_size=8, num_layers=2, bidirectional=True)
    model = build_model(cfg, 12, 2, seed=0)
    reference = torch.nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True)
    assert list(model.lstm.state_dict()) == list(reference.state_dict())
    assert list(model.state_dict()) == ["embed.weight", *(f"lstm.{k}" for k in reference.state_dict()),
                                        "head.weight", "head.bias"]
    before = weights_checksum(model)
    loss = model(torch.randint(1, 12, (4, 9)), torch.tensor([9, 4, 2, 7]), "mask").sum()
    loss.backward()
    assert weights_checksum(model) == before and len(list(model.parameters())) == 1 + 16 + 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.lstm.parameters())


def test_dropout_between_layers_as_nn_lstm_applies_it():
    """Unpadded batch, dropout 1 between the layers (training): the last layer sees zeros, as nn.LSTM's does."""
    model = build_model(ModelConfig(embed_dim=6, hidden_size=8, num_layers=2, bidirectional=True), 12, 2, seed=0)
    model.lstm.dropout = 1.0
    tokens, lengths = torch.randint(1, 12, (4, 9)), torch.full((4,), 9)
    torch.testing.assert_close(model(tokens, lengths, "mask"), model(tokens, lengths, "pack"))
    assert torch.equal(model(tokens, lengths, "mask"), model(tokens.flip(1), lengths, "mask"))  # input dropped
    model.eval()  # no dropout in eval mode
    assert not torch.equal(model(tokens, lengths, "mask"), model(tokens.flip(1), lengths, "mask"))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not built into this torch")
@pytest.mark.parametrize("task", ["classify", "tag"])
def test_bidirectional_mask_runs_onednn_on_the_cpu(task):
    """float32 on the CPU: both directions of every layer, forward and backward, in oneDNN's fused kernel."""
    data, model = _model(task, 2, torch.float32)
    batch = Strategy(StrategySpec(name="mask", **PRESETS["mask"])).collate(data, np.arange(16))
    with KernelProbe() as probe:
        loss_of(model(batch.tokens, batch.lengths, "mask"), batch.labels).backward()
    assert probe.kernel == "onednn"
    assert {"mkldnn_rnn_layer", "mkldnn_rnn_layer_backward"} <= probe.ops
    assert not probe.ops & {"lstm_cell", "_thnn_fused_lstm_cell", "sigmoid", "tanh"}  # no generic per-step loop
    batch = Strategy(StrategySpec(name="pack", **PRESETS["pack"])).collate(data, np.arange(16))  # sorted
    with KernelProbe() as packed:
        model(batch.tokens, batch.lengths, "pack")
    assert packed.kernel == "generic"  # what packing gets on the CPU, and why the masked readout is faster
