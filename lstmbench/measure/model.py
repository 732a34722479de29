"""Stage 4, the model: the one LSTM classifier every strategy shares, its seeded init and checksum."""
from __future__ import annotations

import contextlib
import hashlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data import IGNORE, PAD, Dataset
from ..strategies import PACKED
from ..suite import ModelConfig, Suite


class LSTMClassifier(nn.Module):
    """Embedding -> LSTM -> linear head on one hidden state per sequence.

    `readout` picks that state, and is the only place strategies differ inside the model:
      last: the last time step of the padded batch (h_n of a padded run: what a naive model reads)
      mask: each sequence's true last step gathered from the padded output; a bidirectional LSTM runs its
            reverse direction over each sequence reversed within its length (`both_directions`): exact
      pack: h_n of a PackedSequence run: exact per sequence, in both directions (the batch comes sorted
            longest first from collate, so it packs with enforce_sorted=True)

    Nothing in `forward` moves a tensor between devices: the packed path reads `lengths` on the CPU, the
    masked path `on_device` (the same lengths, copied with the tokens), so a CUDA step never waits for the GPU.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, num_classes: int, num_features: int = 0,
                 tag: bool = False):
        super().__init__()
        self.tag = tag  # one output per step (the tag task) instead of one per sequence
        self.features = num_features  # continuous series enter through a linear projection, tokens an embedding
        self.embed = (nn.Linear(num_features, cfg.embed_dim) if num_features
                      else nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD))
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.directions = 2 if cfg.bidirectional else 1
        self.head = nn.Linear(cfg.hidden_size * self.directions, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, readout: str,
                on_device: torch.Tensor | None = None) -> torch.Tensor:
        """`lengths` [B] on the CPU; `on_device`: the same on the tokens' device (Batch.lengths_on_device),
        else copied there here (for callers off the timed path)."""
        x = self.embed(tokens.to(self.embed.weight.dtype) if self.features else tokens)
        if readout not in PACKED:
            lengths = on_device if on_device is not None else lengths.to(x.device)
        if self.tag:
            return self.head(self._steps(x, lengths, readout))
        if readout in PACKED:  # collate sorted the batch, longest first
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True)
            _, (h_n, _) = self.lstm(packed)
            state = self._last_layer(h_n)
        elif readout == "last":
            _, (h_n, _) = self.lstm(x)
            state = self._last_layer(h_n)
        elif readout == "mask" and self.directions == 2:
            end = (lengths - 1).view(-1, 1)  # both directions, in their running order, end there
            directions = both_directions(self.lstm, x, lengths)
            state = torch.cat([_take(out, end).squeeze(1) for out in directions], dim=1)
        elif readout == "mask":
            state = last_step(self.lstm(x)[0], lengths)
        else:
            raise ValueError(f"unknown readout {readout!r}")
        return self.head(state)

    def _steps(self, x: torch.Tensor, lengths: torch.Tensor, readout: str) -> torch.Tensor:
        """[B, T, H x directions]: every step's output. Packed runs come back padded with zeros."""
        if readout in PACKED:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True)
            out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
            return out
        if readout == "mask" and self.directions == 2:
            ahead, behind = both_directions(self.lstm, x, lengths)
            return torch.cat([ahead, _take(behind, within_length_reversal(lengths, x.shape[1]))], dim=2)
        return self.lstm(x)[0]  # mask and last alike; the labels decide which steps are scored

    def _last_layer(self, h_n: torch.Tensor) -> torch.Tensor:
        """h_n is [layers * directions, B, H]; the last layer's directions, concatenated."""
        return torch.cat(list(h_n[-self.directions:]), dim=1)


def last_step(output: torch.Tensor, lengths: torch.Tensor, bidirectional: bool = False) -> torch.Tensor:
    """[B, H]: each sequence's output at its true last step, from a batch-first [B, T, H] LSTM output over a
    right-padded batch (the masked readout). Unidirectional: exact, whatever follows in the padding. With
    `bidirectional`, `output` is [B, T, 2H] in sequence order (both_directions', or a packed run's): the forward
    half at step length - 1, the reverse half at step 0 (where the reverse direction ends). `lengths` on any
    device (copied to the output's only if elsewhere)."""
    ends = (_on(lengths, output.device) - 1).view(-1, 1)
    if not bidirectional:
        return _take(output, ends).squeeze(1)
    hidden = output.shape[-1] // 2
    return torch.cat([_take(output[..., :hidden], ends).squeeze(1), output[:, 0, hidden:]], dim=1)


def both_directions(lstm: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A bidirectional batch-first nn.LSTM's last layer, both directions, over a right-padded batch x [B, T, F],
    exactly as each sequence alone: layer by layer, the forward direction over the batch as is, the reverse
    direction over each sequence reversed within its length (Keras' reverse_sequence), so that its padding, too,
    comes after its true end. Each direction is one fused-kernel call (oneDNN, cuDNN) on the nn.LSTM's own
    parameters. Both [B, T, H], in their own running order: the reverse direction's step t is the sequence's
    step length - 1 - t. Dropout between layers as nn.LSTM applies it (when lstm.training). `lengths` on any
    device (copied to x's only if elsewhere). An nn.GRU runs the same way."""
    flip = within_length_reversal(_on(lengths, x.device), x.shape[1])
    h0 = x.new_zeros(1, x.shape[0], lstm.hidden_size)
    zeros = h0 if lstm.mode == "GRU" else (h0, h0)
    for layer in range(lstm.num_layers):
        ahead = _direction(lstm, x, zeros, layer, "")
        behind = _direction(lstm, _take(x, flip), zeros, layer, "_reverse")
        if layer + 1 < lstm.num_layers:  # the next layer reads both directions in the sequence's own order
            x = torch.cat([ahead, _take(behind, flip)], dim=2)
            if lstm.training and lstm.dropout:  # where and when nn.LSTM applies it: between layers, training
                x = F.dropout(x, lstm.dropout, training=True)
    return ahead, behind


def _direction(lstm: nn.RNNBase, x: torch.Tensor, hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
               layer: int, suffix: str) -> torch.Tensor:
    """One direction of one layer as a unidirectional one-layer LSTM (or GRU): the op the module itself calls,
    so the same kernel choice (oneDNN for float32 on CPU, cuDNN on CUDA, else the generic loop) and autocast."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if lstm.bias else ("weight_ih", "weight_hh")
    weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in names]
    op = torch._VF.gru if lstm.mode == "GRU" else torch._VF.lstm
    if x.device.type == "cuda":  # cuDNN copies the weights of all but layer 0's forward direction (not at the
        with warnings.catch_warnings():  # start of the module's flat buffer) for the call, cheaply, and warns
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            return op(x, hx, weights, lstm.bias, 1, 0.0, lstm.training, False, True)[0]
    return op(x, hx, weights, lstm.bias, 1, 0.0, lstm.training, False, True)[0]


def rnn_outputs(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor, readout: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch-first nn.LSTM or nn.GRU over a right-padded batch x [B, T, F] as `readout` asks: (output [B, T,
    H x directions] in sequence order, last [B, H x directions], each sequence's final state of the last layer).
      pack: a PackedSequence run (lengths on the CPU; any order): exact, output zero past each length
      mask: exact on the fused kernel: the reverse direction within each length (both_directions); output zero
            past each length, last at each sequence's end
      last: the padded batch as it is: output over the padding too, last at the padded end (a naive model)
    Nothing here reads the lengths back from a GPU: the masked path builds its indices on the device."""
    directions = 2 if rnn.bidirectional else 1
    if readout in PACKED:
        ordered = bool((lengths[:-1] >= lengths[1:]).all()) if len(lengths) > 1 else True
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=ordered)
        out, h_n = rnn(packed)
        h_n = h_n if rnn.mode == "GRU" else h_n[0]
        output, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return output, torch.cat(list(h_n[-directions:]), dim=1)
    if readout == "last":
        output, h_n = rnn(x)
        h_n = h_n if rnn.mode == "GRU" else h_n[0]
        return output, torch.cat(list(h_n[-directions:]), dim=1)
    lengths = _on(lengths, x.device)
    inside = (torch.arange(x.shape[1], device=x.device) < lengths[:, None]).unsqueeze(-1)
    if directions == 2:
        ahead, behind = both_directions(rnn, x, lengths)
        output = torch.cat([ahead, _take(behind, within_length_reversal(lengths, x.shape[1]))], dim=2)
    else:
        output = rnn(x)[0]
    output = output.masked_fill(~inside, 0)
    return output, last_step(output, lengths, bidirectional=directions == 2)


def within_length_reversal(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] int64 on the lengths' device: the time index that reverses each row's first `length` steps
    and leaves its padding where it is. Its own inverse: taking it twice gives the batch back. Built on the
    device from the lengths there (arange and where: kernels, no copy from the host)."""
    steps = torch.arange(width, device=lengths.device)
    ends = lengths.view(-1, 1)
    return torch.where(steps < ends, ends - 1 - steps, steps)


def _on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`: itself where it is already there (the timed path), else a copy."""
    return t if t.device == device else t.to(device)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, T, D] at time index [B, K]: [B, K, D]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Precision:
    """Autocast (train.amp: bf16 | fp16 | none) and, where the LSTM runs in fp16, a gradient scaler: under
    fp16, and under bf16 on CUDA, where torch's autocast runs cuDNN's LSTM in fp16 whatever the autocast dtype
    (`lstm_dtype`, what the kernel probe saw). GradScaler.step reads found_inf on the host (`.item()`): the one
    synchronisation left inside a loss-scaled step, as in every user's fp16 loop."""

    DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, device_type: str, amp: str, lstm_dtype: str = ""):
        self.device_type, self.amp, self.lstm_dtype = device_type, amp, lstm_dtype
        scaled = amp == "fp16" or amp != "none" and lstm_dtype == "float16"
        self.scaler = torch.amp.GradScaler(device_type) if scaled else None

    @property
    def label(self) -> str:
        """What the LSTM really computed in: the amp setting, or fp16 where autocast gave it fp16 under bf16."""
        return "fp16" if self.amp == "bf16" and self.lstm_dtype == "float16" else self.amp

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.DTYPES[self.amp])


def build_model(cfg: ModelConfig, vocab_size: int, num_classes: int, seed: int,
                num_features: int = 0, tag: bool = False, origin: str = "") -> nn.Module:
    """The same (cfg, seed) gives bit-identical initial weights in any process: lstmbench's LSTMClassifier, or
    the suite's own model (cfg.factory, relative to the suite file `origin`: user_model.build)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.factory:
            from .user_model import ModelSpec, build

            spec = ModelSpec(vocab_size, num_features, num_classes, "tag" if tag else "classify", dict(cfg.options))
            return build(cfg, origin, spec)
        return LSTMClassifier(cfg, vocab_size, num_classes, num_features, tag)


def model_for(cfg: ModelConfig, data: Dataset, seed: int, origin: str = "") -> nn.Module:
    """The model for a data set: its vocabulary (or feature count), classes and task."""
    return build_model(cfg, data.vocab_size, data.num_classes, seed, data.num_features, data.tagged, origin)


def loss_of(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy per sequence, or per scored step for the tag task (padding never counts)."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction=reduction)
    return F.cross_entropy(logits, labels, reduction=reduction)


def correct_of(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Correct predictions: of sequences, or of scored steps."""
    return int(hits_of(logits, labels).sum())


def hits_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] int64: each sequence's correct predictions (1 or 0; the tag task: its correct scored steps)."""
    hits = logits.argmax(-1) == labels
    return (hits & (labels != IGNORE)).sum(dim=1) if logits.dim() == 3 else hits.long()


def weights_checksum(model: nn.Module) -> str:
    """sha256 over every parameter's name, shape and float32 bytes: equal checksums, equal models."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def training_bytes(suite: Suite) -> int:
    """A floor on the memory training needs: the LSTM's and embedding's float32 weights, their gradients and
    Adam's two moments (4 copies); activations come on top. The embedding counts only where the suite fixes
    its vocabulary (synthetic data). The suite's own model (model.factory) is not known before it is built: 0."""
    cfg = suite.model
    if cfg.factory:
        return 0
    params, inputs = 0, cfg.embed_dim
    for _ in range(cfg.num_layers):
        params += (2 if cfg.bidirectional else 1) * 4 * cfg.hidden_size * (inputs + cfg.hidden_size + 2)
        inputs = cfg.hidden_size * (2 if cfg.bidirectional else 1)
    if suite.data.source == "synthetic":
        params += suite.data.vocab_size * cfg.embed_dim
    return params * 4 * 4



def lstm_classifier(spec: object) -> LSTMClassifier:
    """lstmbench's own model as a factory (`model.factory: "lstmbench.measure.model:lstm_classifier"`, its
    settings in `model.options`: embed_dim, hidden_size, num_layers, bidirectional, dropout): the default,
    expressed in the protocol every suite's own model follows."""
    cfg = ModelConfig(**spec.options)
    return LSTMClassifier(cfg, spec.vocab_size, spec.num_classes, spec.num_features, spec.task == "tag")
