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
(max_len, max_tokens, boundaries, megabatch, pad_multiple, deal) as keyword arguments. A composed name
"<batching>-<readout>" as suites name them (the default suite's "bucket-mask", which `recommend` may print) is
that batching and readout with padding batch. Every bad argument is one BatchingError sentence naming it
(batching_checks).
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
from .measure import both_directions, model, within_length_reversal
from .strategies import Batch, Strategy, checks, epoch_stream, rank_epoch_stream
from .suite import PRESETS, StrategySpec, names, parse_strategy, short

__all__ = ["batch_sampler", "collate", "last_step", "bidirectional_lstm", "run_rnn", "BatchSampler", "Collated",
           "strategy_spec"]


def strategy_spec(strategy: str | dict | StrategySpec, **options: Any) -> StrategySpec:
    """The validated strategy: a preset name, a composed mapping or a StrategySpec, with `options` on top."""
    if isinstance(strategy, StrategySpec):
        strategy = {k: v for k, v in vars(strategy).items()}
    if isinstance(strategy, str) and strategy not in PRESETS and "-" in strategy:
        strategy = _composed(strategy)
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


def _composed(name: str) -> dict[str, str]:
    """A composed name "<batching>-<readout>" (a suite's "bucket-mask") as its mapping, padding batch."""
    batching, _, readout = name.partition("-")
    if batching in StrategySpec.CHOICES["batching"] and readout in StrategySpec.CHOICES["readout"]:
        return {"name": name, "batching": batching, "padding": "batch", "readout": readout}
    raise BatchingError(
        f"lstmbench.batching: strategy: unknown strategy {short(name)}; give a composed strategy as the mapping "
        '{"name": ..., "batching": ..., "padding": ..., "readout": ...} or name it "<batching>-<readout>" '
        f"(batching {names(StrategySpec.CHOICES['batching'])}; readout {names(StrategySpec.CHOICES['readout'])}), "
        'as in "bucket-mask"')


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
    array = checks.sampler_arguments(lengths, spec, batch_size, seed, drop_last, num_replicas, rank)
    return BatchSampler(array, spec, int(batch_size), int(seed), bool(drop_last), int(num_replicas), int(rank))


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

    def __init__(self, spec: StrategySpec, pad_value: int | float, max_length: int | None):
        self.strategy, self.pad_value, self.max_length = Strategy(spec), pad_value, max_length

    def __call__(self, pairs: Sequence[tuple[Any, Any]]) -> Collated:
        sequences, labels = checks.batch_pairs(pairs, self.pad_value)
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
    pad_value = checks.collate_arguments(spec, pad_value, max_length)
    return Collate(spec, pad_value, None if max_length is None else int(max_length))


def last_step(output: torch.Tensor, lengths: torch.Tensor, bidirectional: bool = False) -> torch.Tensor:
    """[B, H]: each sequence's output at its true last step, from a batch-first [B, T, H] LSTM output over a
    right-padded batch (the masked readout); `lengths` [B] integers in [1, T], on any device (batch.lengths).
    With `bidirectional`, output is [B, T, 2H] in sequence order: the forward half at step length - 1, the
    reverse half at step 0. model.last_step, its arguments checked first."""
    checks.last_step_arguments(output, lengths, bidirectional)
    return model.last_step(output, lengths, bidirectional=bool(bidirectional))


def bidirectional_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Your own nn.LSTM over a right-padded batch, exactly as over each sequence alone, on the fused kernel:
    (output [B, T, H x directions] in sequence order, zero past each length; last [B, H x directions], each
    sequence's final state of the last layer, what h_n of a packed run holds). A bidirectional LSTM's reverse
    direction runs over each sequence reversed within its length, never over the padding (what packing does,
    without the generic loop on CPU). x: [B, T, input] (batch_first) or [T, B, input], on the LSTM's device and
    in its weights' dtype (or under autocast); lengths: B integers in [1, T], a tensor on any device or a list.

        output, last = bidirectional_lstm(model.lstm, model.embed(batch.inputs), batch.lengths)
        logits = model.head(last)
    """
    lengths = checks.lstm_arguments(lstm, x, lengths)
    if not lstm.batch_first:
        x = x.transpose(0, 1)
    inside = (torch.arange(x.shape[1], device=x.device) < lengths.to(x.device)[:, None]).unsqueeze(-1)
    if lstm.bidirectional:
        ahead, behind = both_directions(lstm, x, lengths)
        flip = within_length_reversal(lengths.to(x.device), x.shape[1])
        output = torch.cat([ahead, behind.gather(1, flip.unsqueeze(-1).expand(-1, -1, behind.shape[-1]))], dim=2)
    else:
        output = lstm(x if lstm.batch_first else x.transpose(0, 1))[0]
        output = output if lstm.batch_first else output.transpose(0, 1)
    output = output.masked_fill(~inside, 0)
    last = model.last_step(output, lengths, bidirectional=lstm.bidirectional)
    return (output if lstm.batch_first else output.transpose(0, 1)), last


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor, readout: str
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Your batch-first nn.LSTM or nn.GRU over a right-padded batch, the way `readout` asks: (output [B, T,
    H x directions] in sequence order, last [B, H x directions], each sequence's final state of the last
    layer). The helper of a model lstmbench benchmarks (a suite's `model.factory`): written with it, a model
    supports every strategy.

      pack  a PackedSequence run (lengths on the CPU): exact; output zero past each length
      mask  exact on the fused kernel, both directions (the reverse one within each length); output zero past
            each length
      last  the padded batch as it is (a naive model: the padding runs through the RNN)

        steps, last = run_rnn(self.gru, self.embed(inputs), lengths, readout)
        return self.head(last)

    Nothing here waits for a GPU: lengths on a device are not read back (their values are checked only on the
    CPU)."""
    checks.rnn_arguments(rnn, x, lengths, readout)
    return model.rnn_outputs(rnn, x, lengths, readout)

