"""Stage 2, the data: a seeded synthetic task -> `Dataset` of token sequences with one label each.

The task: a marker token is planted at a uniform position in half of the sequences; the label is
"marker present". The evidence can sit anywhere, so truncation loses accuracy in proportion to the
sequences longer than its cut, and a readout after the padding has to carry it across the padding.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import SuiteError
from .suite import DataConfig, Lengths, Suite

PAD = 0  # the padding index; never a real token


@dataclass(frozen=True)
class Dataset:
    """Sequences stored flat (sequence i is tokens[offsets[i]:offsets[i+1]]) and as a padded matrix.

    The padded matrix is built once when the data is made, like tokenised data stored on disk, so that
    a batch is one slice of it (`padded[idx, :width]`): batch preparation then costs microseconds and
    the strategies differ only in which rows and how many columns they take.
    """

    tokens: np.ndarray  # int64, all sequences concatenated
    offsets: np.ndarray  # int64, len(self)+1 boundaries
    labels: np.ndarray  # int64, one per sequence
    num_classes: int
    padded: np.ndarray  # [len(self), width] int32, PAD after each sequence

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def max_length(self) -> int:
        """The padded matrix's width: the longest sequence of all splits made together."""
        return self.padded.shape[1]

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


@dataclass(frozen=True)
class Splits:
    train: Dataset
    eval: Dataset

    @property
    def max_length(self) -> int:
        """The longest sequence of either split: what naive padding pads every batch to."""
        return int(max(self.train.lengths.max(), self.eval.lengths.max()))


def make_data(cfg: DataConfig, seed: int) -> Splits:
    """The same `seed` gives the same train and eval sets, whatever the strategy."""
    rng = np.random.default_rng([seed, 0xDA7A])  # its own stream: independent of the model's init
    train = _synthetic(cfg, cfg.train_size, rng)
    held_out = _synthetic(cfg, cfg.eval_size, rng)
    width = int(max(train[2].max(initial=0), held_out[2].max(initial=0)))
    return Splits(_dataset(*train, width=width), _dataset(*held_out, width=width))


def from_sequences(sequences: list, labels: list, num_classes: int = 2, width: int = 0) -> Dataset:
    """A Dataset from token lists (tests, small real sets); `width` defaults to the longest."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    tokens = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
    return _dataset(tokens, np.asarray(labels, dtype=np.int64), lengths, num_classes, width or int(lengths.max()))


def _dataset(tokens: np.ndarray, labels: np.ndarray, lengths: np.ndarray, num_classes: int, width: int) -> Dataset:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    padded = np.full((len(lengths), width), PAD, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(tokens)) - np.repeat(offsets[:-1], lengths)
    padded[rows, cols] = tokens
    return Dataset(tokens, offsets, labels, num_classes, padded)


def sample_lengths(spec: Lengths, n: int, rng: np.random.Generator) -> np.ndarray:
    if spec.dist == "fixed":
        return np.full(n, spec.length, dtype=np.int64)
    if spec.dist == "uniform":
        return rng.integers(spec.min, spec.max + 1, size=n, dtype=np.int64)
    raw = np.exp(np.log(spec.median) + spec.sigma * rng.standard_normal(n))
    return np.clip(np.rint(raw), spec.min, spec.max).astype(np.int64)


def _synthetic(cfg: DataConfig, n: int, rng: np.random.Generator) -> tuple:
    """(tokens, labels, lengths, num_classes) of the marker task."""
    lengths = sample_lengths(cfg.lengths, n, rng)
    starts = np.cumsum(lengths) - lengths
    marker = cfg.vocab_size - 1
    tokens = rng.integers(PAD + 1, marker, size=int(lengths.sum()), dtype=np.int64)  # never PAD, never the marker
    labels = rng.integers(0, 2, size=n, dtype=np.int64)
    where = starts + (rng.random(n) * lengths).astype(np.int64)  # uniform position in each sequence
    tokens[where[labels == 1]] = marker
    return tokens, labels, lengths, 2


def check_data(suite: Suite) -> None:
    """Make each seed's data once and refuse what would make the numbers meaningless."""
    for seed in suite.seeds:
        splits = make_data(suite.data, seed)
        for name, split in (("train", splits.train), ("eval", splits.eval)):
            classes = np.unique(split.labels)
            if len(classes) < 2:
                raise SuiteError(suite.origin, "data", f"the {name} split of seed {seed} has a single class "
                                                       f"(label {classes[0]}): accuracy would mean nothing; "
                                                       f"use more sequences")
            if split.lengths.min() < 1:
                raise SuiteError(suite.origin, "data", f"the {name} split of seed {seed} has an empty sequence")
