"""Stage 2, the data: a seeded synthetic task or a real source -> `Dataset`s of sequences, one label each.

The synthetic task: a marker token is planted at a uniform position in half of the sequences; the label
is "marker present". The evidence can sit anywhere, so truncation loses accuracy in proportion to the
sequences longer than its cut, and a readout after the padding has to carry it across the padding.
Real sources (`sources.py`) are split with the seed (or keep their own held-out file), tokenised with a
vocabulary built on the training split, or (time series) z-normalised with the training split's statistics.
"""
from __future__ import annotations

import array
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SuiteError
from ..suite import (
    MAX_LENGTHS_BYTES,
    MAX_PADDED_CELLS,
    MAX_SEQUENCE,
    DataConfig,
    Lengths,
    Suite,
    Unreadable,
    read_text,
    short,
)
from . import sources

PAD = 0  # the padding index; never a real token
IGNORE = -100  # the label of a padded step (cross_entropy's ignore_index): padding never counts


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
    padded: np.ndarray  # [len(self), width] int64 tokens (or [.., width, F] float32 features), PAD after each
    vocab_size: int = 0  # token ids are below this (0 for feature data)
    num_features: int = 0  # F for continuous series (they enter the LSTM through a linear projection)
    padded_tags: np.ndarray | None = None  # task tag: [len(self), width] label per step, IGNORE after each end

    @property
    def tagged(self) -> bool:
        return self.padded_tags is not None

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

    def checksum(self) -> str:
        """sha256 prefix over both splits' sequences, labels and tags (the padded matrix is made from the
        sequences): equal checksums, equal data."""
        h = hashlib.sha256()
        for data in (self.train, self.eval):
            for part in (data.tokens, data.offsets, data.labels, data.padded_tags):
                if part is not None:
                    h.update(f"{part.dtype}{part.shape}".encode())
                    h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()[:16]


def make_data(cfg: DataConfig, seed: int, origin: str = "") -> Splits:
    """The same `seed` gives the same train and eval sets, whatever the strategy. `origin` is the suite
    file: data paths are relative to it, and errors name it."""
    rng = np.random.default_rng([seed, 0xDA7A])  # its own stream: independent of the model's init
    if cfg.source == "synthetic":
        train = _synthetic(cfg, cfg.train_size, rng, origin)
        held_out = _synthetic(cfg, cfg.eval_size, rng, origin)
        width = int(max(train[2].max(initial=0), held_out[2].max(initial=0)))

        def split(parts: tuple) -> Dataset:
            return _dataset(*parts[:4], width=width, vocab_size=cfg.vocab_size, tags=(parts[4:] or [None])[0])

        return Splits(split(train), split(held_out))
    if cfg.source in ("ucr", "series"):
        return _series(cfg, rng, origin)
    if cfg.source == "reviews":
        texts, labels = sources.read_reviews(origin)
    else:
        texts, labels = sources.read_table(sources.resolve(cfg.path, origin), cfg.text_column, cfg.label_column,
                                           origin)
    return _texts(cfg, texts, labels, rng, origin)


def _texts(cfg: DataConfig, texts: list[str], labels: list[str], rng: np.random.Generator, origin: str) -> Splits:
    ids, lengths, rank = encode(texts, cfg.tokenize)
    starts = np.cumsum(lengths) - lengths
    kept = np.arange(len(texts))
    if cfg.max_length:  # before the split: both splits come from the same filtered set
        kept = np.flatnonzero(lengths <= cfg.max_length)
        if not len(kept):
            raise SuiteError(origin, "data.max_length", f"is {cfg.max_length}: no example is that short")
    eval_idx, train_idx = _split(len(kept), cfg, rng, origin)
    picked = np.concatenate([train_idx, eval_idx])
    empty = picked[lengths[kept[picked]] == 0]
    if len(empty):
        raise SuiteError(origin, "data", f"{len(empty)} examples have no tokens after {cfg.tokenize} "
                                         f"tokenisation (the first is example {empty[0] + 1})")
    longest = int(np.argmax(lengths[kept]))
    if lengths[kept[longest]] > MAX_SEQUENCE:
        raise SuiteError(origin, "data", f"example {longest + 1} has {int(lengths[kept[longest]]):,} tokens after "
                                         f"{cfg.tokenize} tokenisation; sequences are at most {MAX_SEQUENCE:,} steps "
                                         "long (an LSTM runs one step per token, in sequence: longer ones would "
                                         "train for hours); cut the texts")
    size = int(ids.max(initial=0)) + 1 if rank is None else len(rank)  # provisional ids are below this
    lookup, vocab_size = vocabulary(gather(ids, starts, lengths, kept[train_idx]), size, rank, cfg.min_freq,
                                    cfg.max_vocab)
    classes = {c: i for i, c in enumerate(sorted({labels[i] for i in kept}))}
    y = np.fromiter((classes[labels[i]] for i in kept), dtype=np.int64, count=len(kept))
    width = int(lengths[kept[picked]].max())
    _check_size(len(picked), width, 1, origin)

    def split(idx: np.ndarray) -> Dataset:
        rows = kept[idx]
        return _dataset(lookup[gather(ids, starts, lengths, rows)], y[idx], lengths[rows], len(classes), width,
                        vocab_size)

    return Splits(split(train_idx), split(eval_idx))


def encode(texts: list[str], mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(every text's tokens as one flat array of provisional ids, each text's length, each id's rank among the
    tokens sorted, or None where that is the id's own order). char: an id is the character's code point, taken
    in bulk (a list of one-character strings cost 8 bytes a character, and more); word: ids number the words
    (sources.tokenize's) in the order they first appear."""
    if mode == "char":
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        ids, at = np.empty(int(lengths.sum()), dtype=np.uint32), 0
        for i in range(0, len(texts), 4096):  # a bounded slice of the text in UTF-32 at a time
            part = np.frombuffer("".join(texts[i:i + 4096]).encode("utf-32-le", "surrogatepass"), dtype="<u4")
            ids[at:at + len(part)], at = part, at + len(part)
        return ids, lengths, None
    numbers: dict[str, int] = {}
    flat, counts = array.array("q"), []
    for text in texts:
        words = sources.WORD.findall(text.lower())
        counts.append(len(words))
        flat.extend([numbers.setdefault(w, len(numbers)) for w in words])
    rank = np.empty(len(numbers), dtype=np.int64)
    rank[[numbers[w] for w in sorted(numbers)]] = np.arange(len(numbers))
    return np.frombuffer(flat, dtype=np.int64), np.array(counts, dtype=np.int64), rank


def vocabulary(train: np.ndarray, size: int, rank: np.ndarray | None, min_freq: int, max_vocab: int
               ) -> tuple[np.ndarray, int]:
    """(token id of each of `size` provisional ids, vocabulary size) from the training split's ids (encode's):
    tokens seen at least min_freq times, most frequent first and then in sorted order (at most max_vocab, 0 =
    all), numbered from 2: 0 is padding and 1 (OOV) stands for everything else."""
    counts = np.bincount(train, minlength=size)
    present = np.flatnonzero(counts >= min_freq)
    kept = present[np.lexsort((present if rank is None else rank[present], -counts[present]))][:max_vocab or None]
    lookup = np.full(size, sources.OOV, dtype=np.int64)
    lookup[kept] = np.arange(sources.OOV + 1, sources.OOV + 1 + len(kept))
    return lookup, len(kept) + 2


def gather(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The tokens of `rows`, one after another; built a few million tokens at a time, so that the index
    arrays stay small."""
    out = np.empty(int(lengths[rows].sum()), dtype=flat.dtype)
    ends = np.cumsum(lengths[rows])
    cuts = np.searchsorted(ends, np.arange(2**22, ends[-1] if len(ends) else 0, 2**22), side="right")
    at = 0
    for part in np.split(rows, cuts):
        n = lengths[part]
        index = np.repeat(starts[part] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
        out[at:at + len(index)], at = flat[index], at + len(index)
    return out


def _series(cfg: DataConfig, rng: np.random.Generator, origin: str) -> Splits:
    """Time series. UCR sets keep their official train/test split, and `series` with an eval_path its two
    files: train_size/eval_size subsample each with the seed. `series` without one splits its file as text
    is split."""
    if cfg.source == "ucr":
        train_x, train_y, test_x, test_y = sources.read_ucr(cfg.dataset, origin)
        files = [("data.dataset", f"{cfg.dataset}_{part}.ts") for part in ("TRAIN", "TEST")]
    else:
        train_x, train_y = _series_file(cfg, "path", origin)
        files = [(f"data.{key}", str(sources.resolve(getattr(cfg, key), origin))) for key in ("path", "eval_path")]
        if not cfg.eval_path:
            test_idx, train_idx = _split(len(train_x), cfg, rng, origin)
            return _normalised((train_x, train_y, train_idx, files[0]), (train_x, train_y, test_idx, files[0]), origin)
        test_x, test_y = _series_file(cfg, "eval_path", origin)
        if test_x[0].shape[1] != train_x[0].shape[1]:
            names = [sources.resolve(p, origin) for p in (cfg.eval_path, cfg.path)]
            raise SuiteError(origin, "data.eval_path", f"{names[0]}: {sources.feature_count(test_x[0].shape[1])} "
                                                       f"where {names[1]} has {train_x[0].shape[1]}; every sequence "
                                                       "needs the same features")
    train_idx = rng.permutation(len(train_x))[:cfg.train_size or None]
    test_idx = rng.permutation(len(test_x))[:cfg.eval_size or None]
    return _normalised((train_x, train_y, train_idx, files[0]), (test_x, test_y, test_idx, files[1]), origin)


def _series_file(cfg: DataConfig, key: str, origin: str) -> tuple[list[np.ndarray], list[str]]:
    """The user's series file named by data.path or data.eval_path; the training file needs two classes."""
    path = sources.resolve(getattr(cfg, key), origin)
    x, y = sources.read_series(path, cfg.label_column, origin, f"data.{key}")
    if key == "path" and len(set(y)) < 2:
        raise SuiteError(origin, "data.path", f"{path}: every sequence has the label {short(y[0])}; a classifier "
                                              "needs at least 2 classes")
    return x, y


def _normalised(train: tuple, held_out: tuple, origin: str) -> Splits:
    """Datasets of the sequences (series, labels, indices, (suite key, file)) picked for each split, z-normalised
    per feature with the training split's mean and std, computed in float64 (in float32 the squares of values
    near 1e20 overflow: the std becomes inf and every feature 0); classes are the sorted labels of both."""
    (train_x, train_y, train_idx, _), (test_x, test_y, test_idx, _) = train, held_out
    stacked = np.concatenate([train_x[i] for i in train_idx], dtype=np.float64)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-8  # + 1e-8: a constant feature becomes 0
    classes = {c: i for i, c in enumerate(sorted(set(train_y) | set(test_y)))}
    width = max(len(s) for s in [*(train_x[i] for i in train_idx), *(test_x[i] for i in test_idx)])
    _check_size(len(train_idx) + len(test_idx), width, stacked.shape[1], origin)

    def scaled(x: np.ndarray, key: str, name: str) -> np.ndarray:
        z = (x - mean) / std
        over = np.abs(z).max(axis=0) > sources.F32_MAX  # only where training held a (nearly) constant feature
        if over.any():
            j = int(np.argmax(over))
            raise SuiteError(origin, key, f"{name}: feature {j + 1} reaches {np.abs(z[:, j]).max():.3g} normalised "
                                          f"with the training split's mean {mean[j]:.3g} and std {std[j]:.3g}, past "
                                          f"the range of float32 (±{sources.F32_MAX:.2g}): it is (nearly) constant in "
                                          "training but not here; rescale or drop it")
        return z.astype(np.float32)

    def split(xs: list[np.ndarray], ys: list[str], idx: np.ndarray, file: tuple[str, str]) -> Dataset:
        return from_sequences([scaled(xs[i], *file) for i in idx], [classes[ys[i]] for i in idx], len(classes), width)

    return Splits(split(*train), split(*held_out))


def _split(n: int, cfg: DataConfig, rng: np.random.Generator, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded: the first eval_size of a permutation are held out, up to train_size of the rest train. A file's
    data with eval_size at its default (512, sized for the synthetic task) holds out at most a fifth: a user's
    file of 240 series keeps 192 to train on."""
    order = rng.permutation(n)
    fifth = max(n // 5, 1)
    wanted = min(cfg.eval_size, fifth) if cfg.eval_size == DataConfig.eval_size else cfg.eval_size or fifth
    n_eval = min(wanted, n)  # 0: a fifth, and at least one
    train = order[n_eval:][:cfg.train_size or None]
    if len(train) == 0:
        raise SuiteError(origin, "data.eval_size", f"the data has {n} examples and eval_size takes {n_eval}: "
                                                    "none is left to train on")
    return order[:n_eval], train


def _check_size(rows: int, width: int, features: int, origin: str) -> None:
    if rows * width * features > MAX_PADDED_CELLS:
        raise SuiteError(origin, "data", f"{rows:,} sequences padded to {width:,} would make a matrix of "
                                         f"{rows * width * features:,} cells, over the limit of "
                                         f"{MAX_PADDED_CELLS:,}; lower train_size or eval_size")


def from_sequences(sequences: list, labels, num_classes: int = 2, width: int = 0,  # noqa: ANN001
                   vocab_size: int = 0) -> Dataset:
    """A Dataset from token lists or [T, F] float arrays; `width` defaults to the longest."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    features = np.asarray(sequences[0]).ndim == 2
    dtype = np.float32 if features else np.int64
    tokens = np.concatenate([np.asarray(s, dtype=dtype) for s in sequences])
    if not features and not vocab_size:
        vocab_size = int(tokens.max()) + 1
    return _dataset(tokens, np.asarray(labels, dtype=np.int64), lengths, num_classes, width or int(lengths.max()),
                    vocab_size)


def from_pairs(sequences: list[np.ndarray], labels: list, width: int) -> Dataset:
    """A Dataset of one batch of a user's (sequence, label) pairs, padded to `width` (batching.collate): token
    ids ([T] integers) or features ([T, F] floats); a label per sequence (kept in its own dtype) or, for
    tagging, one per step (int64, IGNORE on padding)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    features = sequences[0].ndim == 2
    tokens = np.concatenate([s.astype(np.float32 if features else np.int64, copy=False) for s in sequences])
    tagged = labels[0].ndim == 1
    tags = np.concatenate([y.astype(np.int64, copy=False) for y in labels]) if tagged else None
    per_sequence = np.zeros(len(lengths), dtype=np.int64) if tagged else np.stack(labels)
    vocab = 0 if features else int(tokens.max(initial=0)) + 1
    return _dataset(tokens, per_sequence, lengths, 0, width, vocab, tags)


def _dataset(tokens: np.ndarray, labels: np.ndarray, lengths: np.ndarray, num_classes: int, width: int,
             vocab_size: int = 0, tags: np.ndarray | None = None) -> Dataset:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    padded = np.full((len(lengths), width, *tokens.shape[1:]), PAD, dtype=tokens.dtype)
    # a byte a cell, filled in row order as the tokens are: index arrays of rows and columns cost 32 a token
    real = np.arange(width) < lengths[:, None]
    padded[real] = tokens
    padded_tags = None
    if tags is not None:
        padded_tags = np.full((len(lengths), width), IGNORE, dtype=np.int64)
        padded_tags[real] = tags
    features = tokens.shape[1] if tokens.ndim == 2 else 0
    return Dataset(tokens, offsets, labels, num_classes, padded, 0 if features else vocab_size, features, padded_tags)


def sample_lengths(spec: Lengths, n: int, rng: np.random.Generator, origin: str = "") -> np.ndarray:
    if spec.dist == "fixed":
        return np.full(n, spec.length, dtype=np.int64)
    if spec.dist == "uniform":
        return rng.integers(spec.min, spec.max + 1, size=n, dtype=np.int64)
    if spec.dist == "empirical":
        raw = rng.choice(_length_file(sources.resolve(spec.file, origin), origin), size=n).astype(float)
    else:
        raw = np.exp(np.log(spec.median) + spec.sigma * rng.standard_normal(n))
        if spec.dist == "bimodal":
            second = rng.random(n) < spec.mix
            raw[second] = np.exp(np.log(spec.median2) + spec.sigma2 * rng.standard_normal(int(second.sum())))
    return np.clip(np.rint(raw), spec.min, spec.max).astype(np.int64)


def _length_file(path: Path, origin: str) -> np.ndarray:
    try:
        words = read_text(path, MAX_LENGTHS_BYTES, "a lengths file").split()
    except Unreadable as e:
        raise SuiteError(origin, "data.lengths.file", str(e)) from None
    try:
        lengths = np.array([int(w) for w in words], dtype=np.int64)
    except (ValueError, OverflowError):
        raise SuiteError(origin, "data.lengths.file", f"{path}: expected one integer length a line") from None
    if len(lengths) == 0 or (lengths < 1).any():
        raise SuiteError(origin, "data.lengths.file", f"{path}: expected positive lengths, one a line")
    return lengths


def _synthetic(cfg: DataConfig, n: int, rng: np.random.Generator, origin: str) -> tuple:
    """(tokens, labels, lengths, num_classes) of the marker task."""
    lengths = sample_lengths(cfg.lengths, n, rng, origin)
    starts = np.cumsum(lengths) - lengths
    marker = cfg.vocab_size - 1
    tokens = rng.integers(PAD + 1, marker, size=int(lengths.sum()), dtype=np.int64)  # never PAD, never the marker
    labels = rng.integers(0, 2, size=n, dtype=np.int64)
    where = starts + (rng.random(n) * lengths).astype(np.int64)  # uniform position in each sequence
    tokens[where[labels == 1]] = marker
    if cfg.task != "tag":
        return tokens, labels, lengths, 2
    # tag: each step's label is "the marker has been seen by now" (a running OR within each sequence)
    seen = (tokens == marker).astype(np.int64)
    cumulative = np.cumsum(seen)
    before = np.repeat(np.concatenate([[0], cumulative[starts[1:] - 1]]) if n else seen, lengths)
    return tokens, labels, lengths, 2, (cumulative - before > 0).astype(np.int64)


def length_histogram(lengths: np.ndarray, bins: int = 50) -> list[list[float]]:
    """[shortest, longest, count] per bin of equal width over a set's lengths: the report's length chart, drawn
    from the rows alone (a report never makes or reads the data again)."""
    counts, edges = np.histogram(lengths, bins=bins)
    return [[float(edges[i]), float(edges[i + 1]), int(c)] for i, c in enumerate(counts)]


def length_percentiles(lengths: np.ndarray) -> list[float]:
    """The median, 90th percentile and longest of a set's lengths (the length chart's marks)."""
    return [float(np.percentile(lengths, q)) for q in (50, 90, 100)]


def check_data(suite: Suite) -> None:
    """Make each seed's data once and refuse what would make the numbers meaningless."""
    for seed in suite.seeds:
        splits = make_data(suite.data, seed, suite.origin)
        for name, split in (("train", splits.train), ("eval", splits.eval)):
            classes = np.unique(split.labels)
            if len(classes) < 2:
                raise SuiteError(suite.origin, "data", f"the {name} split of seed {seed} has a single class "
                                                       f"(label {classes[0]}): accuracy would mean nothing; "
                                                       f"use more sequences")
            if split.lengths.min() < 1:
                raise SuiteError(suite.origin, "data", f"the {name} split of seed {seed} has an empty sequence")
