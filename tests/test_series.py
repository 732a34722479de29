"""`data.source: series`: the user's own time series in .ts, .npz or long-format .csv, read from files the
tests write, z-normalised on the training split, split with the seed or kept apart by eval_path."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
import yaml

from lstmbench.data import sources
from lstmbench.data.make import make_data
from lstmbench.errors import SuiteError
from lstmbench.suite.load import MAX_SEQUENCE, load_suite, suite_from_dict


def make_series(n: int = 24, features: int = 2, seed: int = 0, classes: str = "ab") -> tuple[list, list]:
    """n series of 3 to 9 steps ([T, F], or [T] when features is 0), labels cycling through `classes`."""
    rng = np.random.default_rng(seed)
    shape = (lambda t: (t, features)) if features else (lambda t: (t,))
    xs = [(rng.normal(size=shape(int(rng.integers(3, 10)))) * 3 + 5).astype(np.float32) for _ in range(n)]
    return xs, [classes[i % len(classes)] for i in range(n)]


def columns(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 2 else x[:, None]


def write(path, xs: list, ys: list):
    """xs and ys in the format of path's suffix: the layouts the README documents."""
    if path.suffix == ".npz":
        np.savez(path, labels=np.array(ys), **{f"x_{i}": x for i, x in enumerate(xs)})
    elif path.suffix == ".ts":
        lines = ["@problemName mine", "@classLabel true " + " ".join(sorted(set(ys))), "@data"]
        lines += [":".join(",".join(repr(float(v)) for v in col) for col in columns(x).T) + f":{y}"
                  for x, y in zip(xs, ys)]
        path.write_text("\n".join(lines) + "\n")
    else:  # long format, rows of each id shuffled: the time column orders them
        rng = np.random.default_rng(1)
        f = columns(xs[0]).shape[1]
        rows = [f"s{i},{t},{','.join(repr(float(v)) for v in columns(x)[t])},{y}"
                for i, (x, y) in enumerate(zip(xs, ys)) for t in rng.permutation(len(x))]
        path.write_text(f"id,time,{','.join(f'f{j}' for j in range(f))},label\n" + "\n".join(rows) + "\n")
    return path


def suite_for(tmp_path, data: dict, **extra):
    """A series suite written to tmp_path/suite.yaml and loaded as a user's would be."""
    raw = {"name": "s", "seeds": [0], "strategies": ["mask"], "ideal": False,
           "model": {"embed_dim": 8, "hidden_size": 8}, "train": {"batch_size": 8, "epochs": 1, "warmup_steps": 1},
           "data": {"source": "series", **data}, **extra}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(raw))
    return load_suite(tmp_path / "suite.yaml")


@pytest.mark.parametrize("suffix", [".ts", ".npz", ".csv"])
@pytest.mark.parametrize("features", [2, 0])  # 0: 1-D series, one feature
def test_each_format_reads_back(tmp_path, suffix, features):
    xs, ys = make_series(features=features)
    series, labels = sources.read_series(write(tmp_path / f"mine{suffix}", xs, ys), "label", "")
    assert labels == ys and len(series) == len(xs)
    for got, want in zip(series, xs):
        assert got.dtype == np.float32 and got.shape == (len(want), max(features, 1))
        np.testing.assert_allclose(got, columns(want), rtol=1e-6)


def test_a_series_suite_is_split_with_the_seed_and_normalised_on_training(tmp_path):
    xs, ys = make_series(30, features=3)
    write(tmp_path / "mine.npz", xs, ys)
    suite = suite_for(tmp_path, {"path": "mine.npz", "train_size": 0, "eval_size": 6})
    splits = make_data(suite.data, 0, suite.origin)
    train, held_out = splits.train, splits.eval
    assert (len(train), len(held_out)) == (24, 6) and train.num_features == held_out.num_features == 3
    assert train.num_classes == 2 and set(train.labels) == {0, 1}  # 'a' -> 0, 'b' -> 1: sorted
    lengths = np.concatenate([train.lengths, held_out.lengths])
    assert sorted(lengths) == sorted(len(x) for x in xs)
    np.testing.assert_allclose(train.tokens.mean(axis=0), 0, atol=1e-5)  # the training split's statistics
    np.testing.assert_allclose(train.tokens.std(axis=0), 1, atol=1e-4)
    assert not np.allclose(held_out.tokens.mean(axis=0), 0, atol=1e-3)
    again, other = make_data(suite.data, 0, suite.origin), make_data(suite.data, 1, suite.origin)
    assert np.array_equal(again.eval.tokens, held_out.tokens)  # seeded
    assert not np.array_equal(other.eval.tokens, held_out.tokens)
    capped = suite_for(tmp_path, {"path": "mine.npz", "train_size": 10, "eval_size": 0})
    capped_splits = make_data(capped.data, 0, capped.origin)  # at most 10; eval_size 0: a fifth
    assert (len(capped_splits.train), len(capped_splits.eval)) == (10, 6)


def test_eval_path_is_the_held_out_set(tmp_path):
    xs, ys = make_series(20, features=2)
    test_xs, test_ys = make_series(9, features=2, seed=5, classes="abc")
    write(tmp_path / "train.csv", xs, ys)
    write(tmp_path / "test.ts", test_xs, test_ys)
    suite = suite_for(tmp_path, {"path": "train.csv", "eval_path": "test.ts", "train_size": 0, "eval_size": 0})
    splits = make_data(suite.data, 0, suite.origin)
    assert (len(splits.train), len(splits.eval)) == (20, 9) and splits.eval.num_classes == 3  # both files' classes
    stacked = np.concatenate(xs)
    expected = (np.concatenate(test_xs) - stacked.mean(axis=0)) / (stacked.std(axis=0) + 1e-8)
    np.testing.assert_allclose(np.sort(splits.eval.tokens, axis=0), np.sort(expected, axis=0), rtol=1e-4, atol=1e-5)
    sub = suite_for(tmp_path, {"path": "train.csv", "eval_path": "test.ts", "train_size": 12, "eval_size": 4})
    a, b = make_data(sub.data, 0, sub.origin), make_data(sub.data, 1, sub.origin)
    assert (len(a.train), len(a.eval)) == (12, 4)  # subsampled with the seed, like ucr
    assert not np.array_equal(a.eval.tokens, b.eval.tokens)
    assert "eval_path" in suite.to_dict()["data"] and suite.hash != suite_for(tmp_path, {"path": "train.csv"}).hash


def test_a_new_key_at_its_default_leaves_the_hash_alone(tiny_dict):
    suite = suite_from_dict(tiny_dict)
    assert "eval_path" not in suite.to_dict()["data"]
    assert suite_from_dict({**tiny_dict, "data": {**tiny_dict["data"], "eval_path": ""}}).hash == suite.hash


def test_a_tiny_series_suite_trains(tmp_path):
    from lstmbench.measure.train import run_one

    xs, ys = make_series(36, features=2)
    write(tmp_path / "mine.ts", xs, ys)
    suite = suite_for(tmp_path, {"path": "mine.ts", "train_size": 0, "eval_size": 8})
    r = run_one(suite, suite.strategies[0], 0, torch.device("cpu"))
    assert r.status == "ok" and np.isfinite(r.final_loss) and 0 <= r.eval_accuracy <= 1


def npz_of(**members) -> bytes:
    """A .npz archive as bytes: an array is saved as np.savez saves it, (shape, dtype) writes only a header that
    declares it (no data: what a hostile file can do in a few bytes), bytes are the member as they are."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, value in members.items():
            member = io.BytesIO()
            if isinstance(value, np.ndarray):
                np.lib.format.write_array(member, value)
            elif isinstance(value, bytes):
                member.write(value)
            else:
                np.lib.format.write_array_header_1_0(member, {"shape": value[0], "fortran_order": False,
                                                             "descr": np.lib.format.dtype_to_descr(np.dtype(value[1]))})
            z.writestr(f"{name}.npy", member.getvalue())
    return archive.getvalue()


BAD = {  # file name -> content; each case below names one
    "ragged.ts": "@data\n1,2:3,4:a\n1,2,3:b\n",
    "ragged.npz": {"x_0": np.ones((3, 2)), "x_1": np.ones((4, 3)), "labels": np.array([0, 1])},
    "nolabel.ts": "@data\n1,2,3:a\n4,5,6\n",
    "nolabel.npz": {"x_0": np.ones(3), "x_1": np.ones(3), "x_2": np.ones(3), "labels": np.array([0, 1])},
    "nolabels.npz": {"x_0": np.ones(3), "y": np.array([0])},
    "nolabel.csv": "id,time,v,label\na,0,1.5,x\na,1,2.5,\n",
    "nan.ts": "@data\n1,2,NaN:a\n1,2:b\n",
    "inf.npz": {"x_0": np.array([1.0, np.inf]), "x_1": np.ones(2), "labels": np.array(["a", "b"])},
    "nan.csv": "id,time,v,label\na,0,1.5,x\na,1,nan,x\n",
    "empty.npz": {"x_0": np.ones(2), "x_1": np.zeros(0), "labels": np.array([0, 1])},
    "empty.ts": "@data\n1,2:a\n:b\n",
    "mine.txt": "1,2\n",
    "varies.csv": "id,time,v,label\na,0,1,x\nb,0,2,y\na,1,3,y\n",
    "twice.csv": "id,time,v,label\na,0,1,x\na,1,2,x\na,0,3,x\n",
    "word.csv": "id,time,v,label\na,0,1,x\na,1,high,x\n",
    "noid.csv": "key,time,v,label\na,0,1,x\n",
    "one.csv": "id,time,v,label\na,0,1,x\nb,0,2,x\n",
    "pickled.npz": {"x_0": np.array([[1.0]], dtype=object), "labels": np.array([0])},
    "twofeatures.npz": {"x_0": np.ones((3, 2)), "x_1": np.ones((3, 2)), "labels": np.array([0, 1])},
    "onefeature.npz": {"x_0": np.ones(3), "x_1": np.ones(3), "labels": np.array([0, 1])},
    # issue 27: a header that declares 8 TB, one that declares more than its member holds, a member not .npy
    "huge.npz": npz_of(x_0=((10**6, 10**6), np.float64), labels=np.array([0])),
    "short.npz": npz_of(x_0=((1000,), np.float64), x_1=np.ones(3), labels=np.array([0, 1])),
    "notnpy.npz": npz_of(x_0=np.ones(3), labels=b"0,1"),
    # values float32 (the series' dtype) cannot hold: a cast would make them inf, with a warning on stderr
    "big.ts": "@data\n1e308,2,3:a\n1,2:b\n",
    "big.npz": {"x_0": np.array([1.0, -1e300]), "x_1": np.ones(2), "labels": np.array([0, 1])},
    "big.csv": "id,time,v,label\na,0,1,x\na,1,3.5e38,x\nb,0,1,y\n",
}


@pytest.mark.parametrize("data, message", [
    ({"path": "ragged.ts"}, "{d}/ragged.ts:3: 1 feature where {d}/ragged.ts:2 has 2; every sequence needs the "
                            "same features"),
    ({"path": "ragged.npz"}, "{d}/ragged.npz: x_1: 3 features where {d}/ragged.npz: x_0 has 2; every sequence "
                             "needs the same features"),
    ({"path": "onefeature.npz", "eval_path": "twofeatures.npz"},
     "data.eval_path: {d}/twofeatures.npz: 2 features where {d}/onefeature.npz has 1; every sequence needs the "
     "same features"),
    ({"path": "nolabel.ts"}, "{d}/nolabel.ts:3: no class label"),
    ({"path": "nolabel.npz"}, "{d}/nolabel.npz: x_2: no class label (labels holds 2)"),
    ({"path": "nolabels.npz"}, "{d}/nolabels.npz: no labels array; a .npz holds x_0, x_1, ... (one [T] or [T, F] "
                               "array a sequence) and labels (one a sequence)"),
    ({"path": "nolabel.csv"}, "{d}/nolabel.csv:3: no class label"),
    ({"path": "nan.ts"}, "{d}/nan.ts:2: step 3 has a NaN or infinite value; drop or fill missing values first"),
    ({"path": "inf.npz"}, "{d}/inf.npz: x_0: step 2 has a NaN or infinite value; drop or fill missing values first"),
    ({"path": "nan.csv"}, "{d}/nan.csv:3: 'v' has a NaN or infinite value; drop or fill missing values first"),
    ({"path": "empty.npz"}, "{d}/empty.npz: x_1: an empty sequence (no time steps)"),
    ({"path": "empty.ts"}, "{d}/empty.ts:3: an empty sequence (no time steps)"),
    ({"path": "mine.txt"}, "{d}/mine.txt: unknown format .txt; use .ts, .npz or .csv"),
    ({"path": "varies.csv"}, "{d}/varies.csv:4: id 'a' has the label 'y' here but 'x' at line 2; a sequence has "
                             "one label"),
    ({"path": "twice.csv"}, "{d}/twice.csv:4: id 'a' has time 0 twice (also at line 2)"),
    ({"path": "word.csv"}, "{d}/word.csv:3: 'v' is 'high', not a number"),
    ({"path": "noid.csv"}, "{d}/noid.csv has no column 'id' (columns: key, time, v, label); a long-format .csv "
                           "has columns id, time, the features and the label, one row a time step"),
    ({"path": "varies.csv", "label_column": "class"}, "data.label_column: {d}/varies.csv has no column 'class' "
                                                      "(columns: id, time, v, label); a long-format .csv has "
                                                      "columns id, time, the features and the label, one row a "
                                                      "time step"),
    ({"path": "one.csv"}, "{d}/one.csv: every sequence has the label 'x'; a classifier needs at least 2 classes"),
    ({"path": "missing.npz"}, "{d}/missing.npz: no such file"),
    ({"path": "one.csv", "eval_path": "missing.ts"}, "data.eval_path: {d}/missing.ts: no such file"),
    ({"path": "pickled.npz"}, "{d}/pickled.npz: x_0 holds Python objects (object), which only a pickle loads, "
                              "and pickles are not loaded; save numbers (labels: integers or strings)"),
    ({"path": "huge.npz"}, "{d}/huge.npz: x_0 declares a float64 array of shape (1000000, 1000000), over the limit "
                           "of 512 MiB for a data file"),
    ({"path": "short.npz"}, "{d}/short.npz: x_0 declares 7.81 KiB of float64 values but holds 0 bytes: the archive "
                            "is damaged or cut short"),
    ({"path": "notnpy.npz"}, "{d}/notnpy.npz: labels is not a .npy array; a .npz holds x_0, x_1, ... (one [T] or "
                             "[T, F] array a sequence) and labels (one a sequence)"),
    ({"path": "big.ts"}, "{d}/big.ts:2: step 1 has 1e+308, past the range of float32 (±3.4e+38) in which series "
                         "are stored; rescale the series"),
    ({"path": "big.npz"}, "{d}/big.npz: x_0: step 2 has -1e+300, past the range of float32 (±3.4e+38) in which "
                          "series are stored; rescale the series"),
    ({"path": "big.csv"}, "{d}/big.csv: id 'a' (line 2): step 2 has 3.5e+38, past the range of float32 (±3.4e+38) "
                          "in which series are stored; rescale the series"),
])
@pytest.mark.filterwarnings("error")  # no numpy warning on stderr either
def test_bad_series_files_are_one_sentence(tmp_path, data, message):
    for name, content in BAD.items():
        if isinstance(content, dict):
            np.savez(tmp_path / name, **content)
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    if data.get("eval_path") == "missing.ts":  # the training file must pass to reach the held-out one
        write(tmp_path / "one.csv", *make_series(4, features=1))
    with pytest.raises(SuiteError) as e:
        suite = suite_for(tmp_path, data)
        make_data(suite.data, 0, suite.origin)
    key = "" if message.startswith("data.") else "data.path: "
    assert str(e.value) == f"{tmp_path}/suite.yaml: {key}" + message.format(d=tmp_path)


def test_a_sequence_too_long_is_refused(tmp_path):
    np.savez(tmp_path / "long.npz", x_0=np.ones(MAX_SEQUENCE + 1), x_1=np.ones(3), labels=np.array([0, 1]))
    with pytest.raises(SuiteError, match=r"long.npz: x_0: 20,001 steps; sequences are at most 20,000 steps long"):
        sources.read_series(tmp_path / "long.npz", "label", "")


@pytest.mark.parametrize("data, message", [
    ({"source": "series"}, "data.path: is required with source: series (a .ts, .npz or .csv file)"),
    ({"source": "text", "path": "a.csv", "eval_path": "b.csv"}, "data.eval_path: is only used with source: "
                                                                 "series, not text"),
    ({"eval_path": "b.csv"}, "data.eval_path: is only used with source: series, not synthetic"),
    ({"source": "series", "path": "a.ts", "task": "tag"}, "data.task: tag needs a label for every step, which only "
                                                           "the synthetic source has, not series"),
])
def test_series_keys_are_checked(data, message):
    with pytest.raises(SuiteError) as e:
        suite_from_dict({"name": "s", "strategies": ["mask"], "data": data}, "s.yaml")
    assert str(e.value) == f"s.yaml: {message}"


@pytest.mark.filterwarnings("error")
def test_values_near_1e20_are_normalised_in_float64(tmp_path):
    """Issue 27: in float32 the std of values near 1e20 overflowed (squares past 3.4e38): a warning on stderr,
    every feature 0 and training at chance while validate said ok."""
    xs, ys = make_series(30, features=2)
    write(tmp_path / "big.ts", [x * np.float32(1e19) for x in xs], ys)
    suite = suite_for(tmp_path, {"path": "big.ts", "train_size": 0, "eval_size": 6})
    train = make_data(suite.data, 0, suite.origin).train
    np.testing.assert_allclose(train.tokens.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.tokens.std(axis=0), 1, atol=1e-4)


@pytest.mark.filterwarnings("error")
def test_a_held_out_value_past_float32_once_normalised_is_refused(tmp_path):
    """A feature constant in training has a std of 1e-8: a held-out 1e31 becomes 1e39, which float32 cannot hold."""
    write(tmp_path / "train.ts", [np.ones(3, dtype=np.float32)] * 4, ["a", "b"] * 2)
    write(tmp_path / "test.ts", [np.ones(3, dtype=np.float32), np.array([1, 1e31, 1], dtype=np.float32)], ["a", "b"])
    suite = suite_for(tmp_path, {"path": "train.ts", "eval_path": "test.ts", "train_size": 0, "eval_size": 0})
    with pytest.raises(SuiteError) as e:
        make_data(suite.data, 0, suite.origin)
    assert str(e.value) == (f"{tmp_path}/suite.yaml: data.eval_path: {tmp_path}/test.ts: feature 1 reaches 1e+39 "
                            "normalised with the training split's mean 1 and std 1e-08, past the range of float32 "
                            "(±3.4e+38): it is (nearly) constant in training but not here; rescale or drop it")
