"""The public batching API: the strategy lstmbench measured, in your own training loop.

Built on the code the harness times (strategies.Strategy.plan and collate, ranks' distributed dealing,
model.last_step and both_directions), not a copy: the batches you get are the batches it measured.

    from torch.utils.data import DataLoader
    from lstmbench.batching import batch_sampler, collate, last_step

    pairs = [(torch.tensor([5, 3, 9]), 1), (torch.tensor([4, 2]), 0), ...]  # your (sequence, label) pairs
    strategy = {"name": "bucket-mask", "batching": "bucket", "padding": "batch", "readout": "mask"}
    sampler = batch_sampler([len(s) for s, _ in pairs], strategy, batch_size=64, seed=0)
    loader = DataLoader(pairs, batch_sampler=sampler, collate_fn=collate(strategy))
    for epoch in range(10):
        sampler.set_epoch(epoch)
        for batch in loader:  # .inputs [B, T] padded, batch first; .lengths (CPU int64); .labels
            output, _ = lstm(embed(batch.inputs))  # an nn.LSTM(batch_first=True)
            loss = F.cross_entropy(head(last_step(output, batch.lengths)), batch.labels)

A strategy is what a suite's `strategies:` entry holds: a preset name ("bucket", "truncate", ...; `lstmbench
strategies` lists them), or a composed mapping with `name`, `batching`, `padding`, `readout`; options
(max_len, max_tokens, boundaries, megabatch, pad_multiple, deal) as keyword arguments.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.utils.data import Sampler

from .data import from_pairs
from .errors import BatchingError, SuiteError
from .model import both_directions, last_step, within_length_reversal
from .ranks import rank_epoch_stream
from .strategies import Batch, Strategy, epoch_stream
from .suite import PRESETS, StrategySpec, parse_strategy

__all__ = ["batch_sampler", "collate", "last_step", "bidirectional_lstm", "BatchSampler", "Collated", "strategy_spec"]


def strategy_spec(strategy: str | dict | StrategySpec, **options: Any) -> StrategySpec:
    """The validated strategy: a preset name, a composed mapping or a StrategySpec, with `options` on top."""
    if isinstance(strategy, StrategySpec):
        strategy = {k: v for k, v in vars(strategy).items()}
    if isinstance(strategy, str) and strategy in PRESETS:
        item: Any = {strategy: dict(options)} if options else strategy
    elif isinstance(strategy, dict):
        item = {**strategy, **options}
        if "name" not in item:
            item["name"] = "custom"
    else:
        item = strategy
    try:
        return parse_strategy(item, "strategy", "lstmbench.batching")
    except SuiteError as e:
        raise BatchingError(str(e)) from None


@dataclass(frozen=True)
class _Lengths:
    """A data set known by its lengths alone: all that planning and dealing read (`lengths`, `max_length`)."""

    lengths: np.ndarray

    @property
    def max_length(self) -> int:
        return int(self.lengths.max())

    def __len__(self) -> int:
        return len(self.lengths)


class BatchSampler(Sampler[list[int]]):
    """Each epoch's batches as index lists, for `DataLoader(batch_sampler=...)`. Call `set_epoch(n)` before each
    epoch, as with DistributedSampler: epoch n is the harness's epoch n of this seed. With num_replicas > 1,
    this rank's column of the harness's distributed plan (every example once per epoch over the ranks, every
    rank the same number of steps; `deal: balanced` gives each step's ranks batches of similar cost)."""

    def __init__(self, lengths: np.ndarray, spec: StrategySpec, batch_size: int, seed: int, drop_last: bool,
                 num_replicas: int, rank: int):
        self.strategy, self.batch_size, self.seed = Strategy(spec), batch_size, seed
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.lengths = lengths
        self.epoch = 0
        self._stream: Iterator[Any] | None = None
        self._next = 0  # the epoch the stream yields next
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise BatchingError(f"set_epoch: the epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches(self.epoch))

    def __len__(self) -> int:
        return len(self._batches(self.epoch))

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._cached and self._cached[0] == epoch:
            return self._cached[1]
        if self._stream is None or epoch < self._next:  # back in time: walk the random stream again
            self._stream, self._next = self._new_stream(), 0
        plan = next(itertools.islice(self._stream, epoch - self._next, None))
        self._next = epoch + 1
        if self.num_replicas > 1:
            plan = [step[self.rank] for step in plan]
        elif self.drop_last:
            plan = [idx for idx in plan if len(idx) == self.batch_size]
        batches = [idx.tolist() for idx in plan]
        self._cached = (epoch, batches)
        return batches

    def _new_stream(self) -> Iterator[Any]:
        if self.num_replicas == 1:
            return epoch_stream(self.strategy, self.lengths, self.batch_size, self.seed)
        return rank_epoch_stream(self.strategy, _Lengths(self.lengths), self.batch_size, self.seed,
                                 self.num_replicas)


def batch_sampler(lengths: Sequence[int] | np.ndarray | torch.Tensor, strategy: str | dict | StrategySpec,
                  batch_size: int, *, seed: int = 0, drop_last: bool = False, num_replicas: int = 1, rank: int = 0,
                  **options: Any) -> BatchSampler:
    """A torch Sampler of index lists over examples of these `lengths` (one per example, >= 1), batched as
    `strategy` batches them: `DataLoader(dataset, batch_sampler=batch_sampler(...), collate_fn=collate(...))`.
    The same `seed` gives the same batches as `lstmbench run` planned for that seed. `drop_last` drops the
    batches shorter than batch_size (one process only: under DDP every rank already has as many steps).

        sampler = batch_sampler(lengths, "bucket", 64, seed=0, megabatch=50)
        sampler = batch_sampler(lengths, "token_budget", 64, max_tokens=8192, num_replicas=4, rank=r,
                                deal="balanced")
    """
    spec = strategy_spec(strategy, **options)
    if spec.padding == "reshape":
        raise BatchingError("the ideal (reshape) cuts batches into equal rows: a measuring device, not a batching")
    array = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise BatchingError(f"lengths must be a non-empty 1-D sequence of integers, got {array.dtype} of shape "
                            f"{array.shape}")
    if array.min() < 1:
        raise BatchingError(f"every length must be >= 1 (an empty sequence has no last step): example "
                            f"{int(np.argmin(array))} has length {int(array.min())}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise BatchingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
        raise BatchingError(f"num_replicas must be an integer >= 1, got {num_replicas!r}")
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
        raise BatchingError(f"rank must be in [0, {num_replicas}), got {rank!r}")
    if drop_last and (num_replicas > 1 or spec.batching == "token_budget"):
        why = "under DDP every rank already has as many steps" if num_replicas > 1 else \
            "token_budget batches vary in size by design"
        raise BatchingError(f"drop_last does not apply here: {why}")
    if num_replicas > 1 and len(array) < 2 * num_replicas:
        raise BatchingError(f"{len(array)} examples cannot fill a batch on each of {num_replicas} ranks")
    return BatchSampler(array.astype(np.int64), spec, int(batch_size), int(seed), drop_last, int(num_replicas),
                        int(rank))


@dataclass
class Collated:
    """A padded batch: `inputs` [B, T] token ids or [B, T, F] features, batch first, padded with pad_value;
    `lengths` [B] int64 on the CPU (kept lengths: after truncation); `labels` [B] (or [B, T] for tagging,
    -100 past each length, cross_entropy's ignore_index; the naive readout scores padded steps as 0, as the
    harness trains it). `readout` is the strategy's: read the LSTM with `last_step` (mask), `packed` (pack,
    pack_sorted) or its last padded step (last)."""

    inputs: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    readout: str

    def packed(self, x: torch.Tensor) -> PackedSequence:
        """x [B, T, ...] (e.g. the embedded inputs) packed with these lengths, for nn.LSTM. A packing
        strategy's batch comes sorted longest first (labels alike), so it packs with enforce_sorted=True: no
        sort, and no permutation copied to the GPU, inside your step."""
        return pack_padded_sequence(x, self.lengths, batch_first=True,
                                    enforce_sorted=self.readout in ("pack", "pack_sorted"))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Collated":
        """Inputs and labels on `device`; lengths stay on the CPU (pack_padded_sequence wants them there)."""
        return Collated(self.inputs.to(device, non_blocking=non_blocking), self.lengths,
                        self.labels.to(device, non_blocking=non_blocking), self.readout)

    def pin_memory(self) -> "Collated":  # DataLoader(pin_memory=True) calls it
        return Collated(self.inputs.pin_memory(), self.lengths, self.labels.pin_memory(), self.readout)


class Collate:
    """The collate_fn of `collate(...)`: picklable, for DataLoader worker processes."""

    def __init__(self, spec: StrategySpec, pad_value: float, max_length: int | None):
        self.strategy, self.pad_value, self.max_length = Strategy(spec), pad_value, max_length

    def __call__(self, pairs: Sequence[tuple[Any, Any]]) -> Collated:
        sequences, labels = _arrays(pairs)
        longest = max(len(s) for s in sequences)
        width = longest
        if self.strategy.spec.padding == "global" and self.max_length is not None:
            if longest > self.max_length:
                raise BatchingError(f"a sequence of {longest} steps is longer than max_length {self.max_length}")
            width = self.max_length
        batch: Batch = self.strategy.collate(from_pairs(sequences, labels, width), np.arange(len(pairs)))
        inputs = batch.tokens
        if self.pad_value != 0:  # the harness pads with 0; another value, past each kept length
            inputs = inputs.clone()
            inputs[torch.arange(inputs.shape[1]) >= batch.lengths[:, None]] = self.pad_value
        return Collated(inputs, batch.lengths, batch.labels, self.strategy.readout)


def collate(strategy: str | dict | StrategySpec, *, pad_value: float = 0, pad_multiple: int | None = None,
            max_length: int | None = None, **options: Any) -> Collate:
    """A collate_fn for a list of (sequence, label) pairs, padded as `strategy` pads: a sequence is a 1-D tensor
    (or list, or array) of token ids or a 2-D [length, features] one; a label a scalar or, for tagging, one per
    step. `pad_multiple` rounds the padded length up to a multiple of it; `max_length` is the data set's longest
    sequence, needed by global padding (naive). Options as for batch_sampler (max_len for truncate).

        loader = DataLoader(pairs, batch_sampler=sampler, collate_fn=collate("truncate", max_len=128))
    """
    if pad_multiple is not None:
        options["pad_multiple"] = pad_multiple
    spec = strategy_spec(strategy, **options)
    if spec.padding == "reshape":
        raise BatchingError("the ideal (reshape) cuts batches into equal rows: a measuring device, not a batching")
    if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 1):
        raise BatchingError(f"max_length must be an integer >= 1, got {max_length!r}")
    if spec.padding == "global" and max_length is None:  # said now, not in a DataLoader worker later
        raise BatchingError("padding global pads to the data set's longest sequence: pass collate(..., max_length=N)")
    return Collate(spec, pad_value, max_length)


def _arrays(pairs: Sequence[tuple[Any, Any]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The pairs as numpy arrays, checked: one kind of sequence, at least one step each, labels alike."""
    if not len(pairs):
        raise BatchingError("an empty batch: the sampler gave no indices")
    sequences, labels = [], []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise BatchingError(f"item {i} of the batch is not a (sequence, label) pair")
        seq, label = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x) for x in pair)
        if seq.ndim not in (1, 2) or len(seq) == 0:
            raise BatchingError(f"item {i}: a sequence must be 1-D (token ids) or 2-D [length, features] with at "
                                f"least one step, got shape {seq.shape}")
        if label.ndim == 1 and len(label) != len(seq):
            raise BatchingError(f"item {i}: {len(label)} per-step labels for a sequence of {len(seq)} steps")
        sequences.append(seq)
        labels.append(label)
    if len({(s.ndim,) + s.shape[1:] for s in sequences}) > 1:
        kinds = sorted({"token ids" if s.ndim == 1 else f"[length, {s.shape[1]}] features" for s in sequences})
        raise BatchingError(f"the batch mixes sequence shapes: {', '.join(kinds)}")
    if len({y.ndim for y in labels}) > 1 or max(y.ndim for y in labels) > 1:
        raise BatchingError("labels must be all scalars (one per sequence) or all 1-D (one per step)")
    if sequences[0].ndim == 1 and not np.issubdtype(sequences[0].dtype, np.integer):
        raise BatchingError(f"1-D sequences are token ids and must be integers, got {sequences[0].dtype}")
    return sequences, labels


def bidirectional_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Your own nn.LSTM over a right-padded batch, exactly as over each sequence alone, on the fused kernel:
    (output [B, T, H x directions] in sequence order, zero past each length; last [B, H x directions], each
    sequence's final state of the last layer, what h_n of a packed run holds). A bidirectional LSTM's reverse
    direction runs over each sequence reversed within its length, never over the padding (what packing does,
    without the generic loop on CPU). x: [B, T, input] (batch_first) or [T, B, input]; lengths [B].

        output, last = bidirectional_lstm(model.lstm, model.embed(batch.inputs), batch.lengths)
        logits = model.head(last)
    """
    if lstm.proj_size:
        raise BatchingError("bidirectional_lstm: an nn.LSTM with proj_size is not supported")
    if not lstm.batch_first:
        x = x.transpose(0, 1)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    if x.dim() != 3 or lengths.shape != (x.shape[0],):
        raise BatchingError(f"bidirectional_lstm: x must be [B, T, input] with B lengths, got x {tuple(x.shape)} "
                            f"and lengths {tuple(lengths.shape)}")
    if len(lengths) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
        raise BatchingError(f"bidirectional_lstm: lengths must be in [1, {x.shape[1]}]")
    inside = (torch.arange(x.shape[1], device=x.device) < lengths.to(x.device)[:, None]).unsqueeze(-1)
    if lstm.bidirectional:
        ahead, behind = both_directions(lstm, x, lengths)
        flip = within_length_reversal(lengths.to(x.device), x.shape[1])
        output = torch.cat([ahead, behind.gather(1, flip.unsqueeze(-1).expand(-1, -1, behind.shape[-1]))], dim=2)
    else:
        output = lstm(x if lstm.batch_first else x.transpose(0, 1))[0]
        output = output if lstm.batch_first else output.transpose(0, 1)
    output = output.masked_fill(~inside, 0)
    last = last_step(output, lengths, bidirectional=lstm.bidirectional)
    return (output if lstm.batch_first else output.transpose(0, 1)), last
