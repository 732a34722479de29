"""Your own models, benchmarked by lstmbench under every strategy: factories a suite names in `model.factory`
(`suites/own-model.yaml`: `factory: "../examples/models.py:attention_lstm"`).

A factory takes a `ModelSpec` (vocab_size or num_features, num_classes, task, and the suite's `model.options`)
and returns an nn.Module whose `forward(inputs, lengths, readout)` gives logits. `run_rnn` runs the recurrent
layer the way the strategy's readout asks (packed, masked exactly, or over the padding), so each model here
supports every strategy, exactly where the strategy claims to be exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lstmbench.batching import run_rnn


def _inputs(spec, width: int) -> nn.Module:
    """Token ids through an embedding (0 is padding), or a series' features through a linear projection."""
    return nn.Linear(spec.num_features, width) if spec.num_features else \
        nn.Embedding(spec.vocab_size, width, padding_idx=0)


class GRUClassifier(nn.Module):
    """Embedding (or projection) -> GRU -> each sequence's final state -> label."""

    def __init__(self, spec, embed: int = 32, hidden: int = 64, bidirectional: bool = False):
        super().__init__()
        self.embed = _inputs(spec, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), spec.num_classes)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, readout: str) -> torch.Tensor:
        _, last = run_rnn(self.gru, self.embed(inputs), lengths, readout)
        return self.head(last)


class AttentionLSTM(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM -> attention pooling over each sequence's own steps -> label
    (examples/own_model.py's model, as a factory)."""

    def __init__(self, spec, embed: int = 16, hidden: int = 32, layers: int = 2):
        super().__init__()
        self.embed = _inputs(spec, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.score = nn.Linear(2 * hidden, 1, bias=False)  # a bias before a softmax changes nothing: none
        self.head = nn.Linear(2 * hidden, spec.num_classes)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, readout: str) -> torch.Tensor:
        steps, _ = run_rnn(self.lstm, self.embed(inputs), lengths, readout)
        scores = self.score(steps).squeeze(-1)
        if readout != "last":  # a naive model pools over the padding too
            outside = torch.arange(inputs.shape[1], device=inputs.device) >= lengths.to(inputs.device)[:, None]
            scores = scores.masked_fill(outside, float("-inf"))
        pooled = (scores.softmax(dim=1).unsqueeze(-1) * steps).sum(dim=1)
        return self.head(pooled)


class ConvLSTM(nn.Module):
    """A series model: a causal 1-D convolution over the features (each step sees only itself and the steps
    before, so right padding changes no real step) -> LSTM -> label."""

    def __init__(self, spec, channels: int = 16, hidden: int = 32, kernel: int = 3):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(max(spec.num_features, 1), channels, kernel)
        self.embed = None if spec.num_features else nn.Embedding(spec.vocab_size, 1, padding_idx=0)
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, spec.num_classes)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, readout: str) -> torch.Tensor:
        x = self.embed(inputs) if self.embed is not None else inputs  # [B, T, F]
        x = F.pad(x.transpose(1, 2), (self.kernel - 1, 0))  # causal: padding on the left only
        x = torch.relu(self.conv(x)).transpose(1, 2)
        _, last = run_rnn(self.lstm, x, lengths, readout)
        return self.head(last)


class LSTMTagger(nn.Module):
    """Embedding -> bidirectional LSTM -> a label per step (the tag task)."""

    def __init__(self, spec, embed: int = 16, hidden: int = 32):
        super().__init__()
        self.embed = _inputs(spec, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, spec.num_classes)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, readout: str) -> torch.Tensor:
        steps, _ = run_rnn(self.lstm, self.embed(inputs), lengths, readout)
        return self.head(steps)


def gru_classifier(spec) -> nn.Module:
    return GRUClassifier(spec, **spec.options)


def attention_lstm(spec) -> nn.Module:
    return AttentionLSTM(spec, **spec.options)


def conv_lstm(spec) -> nn.Module:
    return ConvLSTM(spec, **spec.options)


def lstm_tagger(spec) -> nn.Module:
    return LSTMTagger(spec, **spec.options)
