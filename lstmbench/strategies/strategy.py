"""Stage 3, batching strategies: batching x padding x readout, as small pure functions.

A strategy plans which examples go together (`plan`), builds each padded batch (`collate`), and
tells the model how to read past the padding (`Strategy.readout`). `train`, `verify` and the length
planner all use these same functions.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..data import IGNORE, Dataset
from ..suite import PRESETS, StrategySpec, Suite

PACKED = ("pack", "pack_sorted")  # the readouts that run a PackedSequence

def note_for(spec: StrategySpec, suite: Suite) -> str:
    """computation_note for this suite's model and task."""
    return computation_note(spec, suite.model.bidirectional, suite.data.task == "tag")


def computation_note(spec: StrategySpec, bidirectional: bool = False, tag: bool = False) -> str:
    """'' when the strategy computes exactly what per-sequence processing computes; else why not. The masked
    readout is exact for a bidirectional LSTM too: its reverse direction runs over each sequence reversed within
    its length (model.both_directions), never over the padding. `bidirectional` is kept for callers."""
    if spec.is_reference:
        return "unpadded: each batch's real tokens cut into equal rows, fixed batch size (not a ceiling)"
    notes = []
    if spec.padding == "truncate":
        notes.append(f"truncates to {spec.max_len} tokens")
    if spec.readout == "last":
        notes.append("scores the padded steps too" if tag else "reads the output after the padding")
    return "; ".join(notes)


def describe(spec: StrategySpec, bidirectional: bool = False, tag: bool = False) -> str:
    """One line for `validate`: the composition, and whether it computes exactly."""
    cut = f" (max_len {spec.max_len})" if spec.padding == "truncate" else ""
    note = computation_note(spec, bidirectional, tag)
    exact = f"changes the computation: {note}" if note else "exact: equals per-sequence processing"
    preset = " [preset]" if spec.name in PRESETS else ""
    keras = f", trained by Keras on {spec.backend} (Embedding mask_zero, layers.LSTM)" if spec.framework == "keras" \
        else ""
    return (f"{spec.name}{preset}: batching {spec.batching}, padding {spec.padding}{cut}, "
            f"readout {spec.readout}{keras}; {exact}")


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T] int32, PAD beyond each sequence's (kept) length
    lengths: torch.Tensor  # [B] int64 on the CPU (what pack_padded_sequence wants): kept lengths
    labels: torch.Tensor  # [B] int64, or [B, T] for the tag task (IGNORE where nothing is scored)
    real_tokens: int  # tokens of the sequences actually fed (after truncation)
    padded_tokens: int  # B x T: every position the LSTM computes (packing computes only real ones)
    # the same lengths, moved with the tokens (pinned, non-blocking): what the masked readout indexes with on
    # the device, so that no step copies lengths there itself (a blocking copy from pageable memory on CUDA)
    lengths_on_device: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.lengths_on_device is None:
            self.lengths_on_device = self.lengths

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        pin = torch.cuda.is_available()
        move = (lambda t: t.pin_memory().to(device, non_blocking=True)) if pin else (lambda t: t.to(device))
        return Batch(move(self.tokens), self.lengths, move(self.labels), self.real_tokens, self.padded_tokens,
                     move(self.lengths_on_device))


@dataclass(frozen=True)
class Strategy:
    spec: StrategySpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def readout(self) -> str:
        return self.spec.readout

    def plan(self, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Index arrays, one per batch, covering every example exactly once (the last batch may be short)."""
        order = rng.permutation(len(lengths))
        if self.spec.batching == "random":
            return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if self.spec.batching == "boundaries":  # the shuffled order, grouped by length range (stable)
            order = order[np.argsort(np.searchsorted(self.spec.boundaries, lengths[order]), kind="stable")]
            ranges = np.searchsorted(self.spec.boundaries, lengths[order])
            batches = [chunk[i:i + batch_size] for r in np.unique(ranges) for chunk in [order[ranges == r]]
                       for i in range(0, len(chunk), batch_size)]
            return [batches[i] for i in rng.permutation(len(batches))]
        # bucket, token_budget: sort the shuffled order by length (ties stay shuffled), cut, shuffle the batch order;
        # with megabatch, sort only within consecutive slices of that many batches (Hugging Face's length grouping)
        span = self.spec.megabatch * batch_size or len(order)
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.split(order, range(span, len(order), span))])
        if self.spec.batching == "bucket":
            batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        else:
            batches = _fill_budget(order, self.kept_lengths(lengths), self.spec.max_tokens)
        return [batches[i] for i in rng.permutation(len(batches))]

    def kept_lengths(self, lengths: np.ndarray) -> np.ndarray:
        return np.minimum(lengths, self.spec.max_len) if self.spec.padding == "truncate" else lengths

    def pad_to(self, kept: np.ndarray, data: Dataset) -> int:
        width = data.max_length if self.spec.padding == "global" else int(kept.max())
        m = self.spec.pad_multiple
        return -(-width // m) * m if m > 1 else width

    def shape(self, data: Dataset, idx: np.ndarray) -> tuple[int, int]:
        """(batch, time) of the batch `collate` would build, without building it."""
        if self.spec.is_reference:
            return len(idx), int(data.lengths[idx].sum()) // len(idx)
        return len(idx), self.pad_to(self.kept_lengths(data.lengths[idx]), data)

    def real_tokens(self, data: Dataset, idx: np.ndarray) -> int:
        """Non-padding tokens of that batch (after truncation, or the reshape's dropped remainder)."""
        if self.spec.is_reference:
            rows, width = self.shape(data, idx)
            return rows * width
        return int(self.kept_lengths(data.lengths[idx]).sum())

    def scored(self, data: Dataset, idx: np.ndarray) -> int:
        """What a training batch's mean loss divides by: its sequences, or (tag task) its labelled steps
        (every padded step too for the readout `last`, which scores them). Lets a DDP rank scale its loss
        by the whole step's count, known from the plan alone."""
        if not data.tagged:
            return len(idx)
        rows, width = self.shape(data, idx)
        if self.spec.is_reference or self.spec.readout == "last":
            return rows * width
        return self.real_tokens(data, idx)

    def collate(self, data: Dataset, idx: np.ndarray, training: bool = True) -> Batch:
        """The padded batch. Tag task: a label per step, IGNORE on padding, except that training with the
        readout `last` (naive) scores the padded steps too, as label 0: that is what a naive loss does."""
        if self.spec.is_reference:
            return _reshaped(data, idx)
        idx = self.row_order(data, idx)
        kept = self.kept_lengths(data.lengths[idx])
        width = self.pad_to(kept, data)
        # one copy; columns past a length are PAD already, and truncation takes no column past its cut
        take = int(kept.max()) if self.spec.padding == "truncate" else min(width, data.max_length)
        tokens = data.padded[idx, :take]
        if width > take:  # pad_multiple (or truncation) left columns to fill with padding
            extra = np.zeros((len(idx), width - tokens.shape[1], *tokens.shape[2:]), dtype=tokens.dtype)
            tokens = np.concatenate([tokens, extra], axis=1)
        labels = data.labels[idx]
        if data.tagged:
            labels = np.full((len(idx), width), IGNORE, dtype=np.int64)
            labels[:, :take] = data.padded_tags[idx, :take]
            if self.spec.readout == "last" and training:
                labels[labels == IGNORE] = 0
        return Batch(torch.from_numpy(tokens), torch.from_numpy(kept), torch.from_numpy(labels),
                     int(kept.sum()), len(idx) * width)

    def row_order(self, data: Dataset, idx: np.ndarray) -> np.ndarray:
        """The batch's examples in the order of its rows. Packing sorts them longest first on the CPU, here, so
        that the model packs with enforce_sorted=True: pack_padded_sequence then neither sorts nor moves a
        permutation to the device inside the step (a blocking copy on CUDA), and h_n needs no unsorting."""
        if self.spec.readout in PACKED:
            return idx[np.argsort(-data.lengths[idx], kind="stable")]
        return idx

    def unpadded(self, data: Dataset, idx: np.ndarray) -> Batch:
        """The same batch without padding: the real tokens it feeds (after truncation), cut into len(idx) equal
        rows. What `efficiency` divides by: the same examples, batch size and token count, no padded cell."""
        return _reshaped(data, idx, self.kept_lengths(data.lengths[idx]))

    def eval_order(self, data: Dataset) -> np.ndarray:
        """The order the held-out sequences are evaluated in: as stored, or by length for a sorting strategy."""
        order = np.arange(len(data))
        return order if self.spec.batching == "random" else order[np.argsort(data.lengths, kind="stable")]

    def eval_batches(self, data: Dataset, batch_size: int) -> list[Batch]:
        """The strategy's own inference path: its padding and readout over the held-out set, in order."""
        order = self.eval_order(data)
        return [self.collate(data, order[i:i + batch_size], training=False)
                for i in range(0, len(order), batch_size)]


def _fill_budget(order: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """fairseq's batch_by_size: grow a batch of ascending lengths while (size + 1) x its longest fits in
    max_tokens padded tokens; a sequence longer than the budget gets a batch of its own."""
    batches, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or (i - start + 1) * lengths[order[i]] > max_tokens:
            batches.append(order[start:i])
            start = i
    return batches


def _reshaped(data: Dataset, idx: np.ndarray, lengths: np.ndarray | None = None) -> Batch:
    """The ideal's batch: the batch's real tokens, in order, cut into len(idx) rows of equal length (the
    remainder of fewer than len(idx) tokens is dropped). No padding at all; labels are the batch's own.
    `lengths`: the tokens kept of each sequence (a truncating strategy's), default all of them."""
    lengths = data.lengths[idx] if lengths is None else lengths
    rows = data.padded[idx, :int(lengths.max())]
    flat = rows[np.arange(rows.shape[1]) < lengths[:, None]]  # the real steps, in order ([n] or [n, F])
    width = len(flat) // len(idx)
    tokens = np.ascontiguousarray(flat[:width * len(idx)].reshape(len(idx), width, *flat.shape[1:]))
    steps = len(idx) * width
    labels = data.labels[idx]
    if data.tagged:  # the same cut of the steps' labels
        tags = data.padded_tags[idx, :int(lengths.max())][np.arange(rows.shape[1]) < lengths[:, None]]
        labels = np.ascontiguousarray(tags[:steps].reshape(len(idx), width))
    return Batch(torch.from_numpy(tokens), torch.from_numpy(np.full(len(idx), width, dtype=np.int64)),
                 torch.from_numpy(labels), steps, steps)


def exact_strategy() -> Strategy:
    """The reference path, equal to per-sequence processing: sequences sorted by length, padded to their
    batch's longest, read out at each one's true end (the masked readout, exact in both directions and on
    the fused kernel; packing is equally exact but runs the slow generic loop on CPU)."""
    return Strategy(StrategySpec(name="exact", batching="bucket", padding="batch", readout="mask"))


def plan_epochs(strategy: Strategy, lengths: np.ndarray, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Every epoch's batches. The shuffle stream depends on the seed only, so strategies with the same
    batching see the same batches in the same order."""
    stream = epoch_stream(strategy, lengths, batch_size, seed)
    return [idx for epoch in itertools.islice(stream, epochs) for idx in epoch]


def epoch_stream(strategy: Strategy, lengths: np.ndarray, batch_size: int, seed: int) -> Iterator[list[np.ndarray]]:
    """Epoch after epoch, that epoch's batches: one random stream for all epochs (batching.batch_sampler walks it
    epoch by epoch, as the harness's plan does)."""
    rng = np.random.default_rng([seed, 0xBA7C])
    while True:
        yield strategy.plan(lengths, batch_size, rng)
