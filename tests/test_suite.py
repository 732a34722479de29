"""Stage 1: suites load, override, hash, and every bad suite gives one exact sentence."""
from __future__ import annotations

from pathlib import Path

import pytest

from lstmbench.errors import SuiteError
from lstmbench.suite.load import load_suite, suite_from_dict
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]


def test_packing_suite_loads_with_the_contract_keys():
    suite = load_suite(ROOT / "suites" / "packing.yaml")
    assert suite.name == "packing"
    assert suite.seeds == (0, 1, 2)
    assert suite.data.lengths.median == 40 and suite.data.lengths.max == 400
    assert [s.name for s in suite.strategies][:5] == ["naive", "truncate", "mask", "pack", "bucket"]
    truncate = suite.strategies[1]
    assert (truncate.padding, truncate.max_len, truncate.readout) == ("truncate", 64, "mask")
    bucket = suite.strategies[4]
    assert (bucket.batching, bucket.padding, bucket.readout) == ("bucket", "batch", "pack")
    assert suite.strategies[5].name == "bucket-mask" and suite.strategies[5].readout == "mask"


def test_overrides_and_hash(tiny_file):
    base = load_suite(tiny_file)
    again = load_suite(tiny_file)
    changed = load_suite(tiny_file, ["train.batch_size=8", "data.lengths.max=30", "seeds=[3]"])
    assert base.hash == again.hash and len(base.hash) == 12
    assert changed.train.batch_size == 8 and changed.data.lengths.max == 30 and changed.seeds == (3,)
    assert changed.hash != base.hash
    assert load_suite(tiny_file, device="auto").device == "auto"
    assert load_suite(tiny_file, ["strategies.1.truncate.max_len=9"]).strategies[1].max_len == 9
    assert load_suite(tiny_file, ["train.lr=1e-3"]).train.lr == 0.001  # YAML 1.1 reads 1e-3 as a string


def test_composed_strategy(tiny_dict):
    tiny_dict["strategies"] = [{"name": "bm", "batching": "bucket", "padding": "batch", "readout": "mask"},
                               {"bucket": {"readout": "mask", "name": "bucket2"}}]
    suite = suite_from_dict(tiny_dict)
    assert [(s.name, s.batching, s.readout) for s in suite.strategies] == [("bm", "bucket", "mask"),
                                                                        ("bucket2", "bucket", "mask")]


def _error(tmp_path: Path, suite: dict | str, overrides: tuple = ()) -> str:
    path = tmp_path / "s.yaml"
    if isinstance(suite, str):
        path.write_text(suite)
    else:
        write_suite(tmp_path, suite, "s.yaml")
    with pytest.raises(SuiteError) as e:
        load_suite(path, overrides)
    return str(e.value).replace(str(path), "s.yaml")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["train"].update(batch_sise=3),
     "s.yaml: train.batch_sise: unknown key (did you mean 'batch_size'?); valid: amp, batch_size, compile, "
     "cudnn_benchmark, epochs, "
     "eval_batch_size, eval_every, loader, lr, max_time_s, target_accuracy, until_target, warmup_steps"),
    (lambda d: d["strategies"].append("packed"),
     "s.yaml: strategies[5]: unknown strategy 'packed' (did you mean 'pack'?); valid: boundaries, bucket, mask, naive, pack, "
     "sorted_pack, token_budget, truncate"),
    (lambda d: d["train"].update(batch_size=0), "s.yaml: train.batch_size: must be > 0, got 0"),
    (lambda d: d["train"].update(batch_size="32"), "s.yaml: train.batch_size: must be an integer, got '32'"),
    (lambda d: d["train"].update(lr=True), "s.yaml: train.lr: must be a number, got True"),
    (lambda d: d["model"].update(bidirectional="yes"), "s.yaml: model.bidirectional: must be true or false, got 'yes'"),
    (lambda d: d["data"]["lengths"].update(min=50), "s.yaml: data.lengths.min: must be <= max (40), got 50"),
    (lambda d: d["data"]["lengths"].update(dist="zipf"),
     "s.yaml: data.lengths.dist: unknown value 'zipf'; valid: lognormal, uniform, fixed, bimodal, empirical"),
    (lambda d: d.update(strategies=[]), "s.yaml: strategies: must list at least one strategy"),
    (lambda d: d.update(seeds=[0, "one"]), "s.yaml: seeds: must be a list of integers, got [0, 'one']"),
    (lambda d: d.update(seeds=[1, 1]), "s.yaml: seeds: must not repeat a seed, got [1, 1]"),
    (lambda d: d.update(device="tpu"), "s.yaml: device: unknown value 'tpu' (did you mean 'cpu'?); valid: cpu, cuda, auto"),
    (lambda d: d.update(name="../../etc"),
     "s.yaml: name: must be letters, digits, '_', '.' or '-' (it names a results folder), got '../../etc'"),
    (lambda d: d["strategies"].append({"truncate": {"max_len": 0}}), "s.yaml: strategies[5].truncate.max_len: must be > 0, got 0"),
    (lambda d: d["strategies"].append({"mask": {"max_len": 5}}),
     "s.yaml: strategies[5].mask.max_len: is only used with padding: truncate"),
    (lambda d: d["strategies"].append("mask"),
     "s.yaml: strategies[5]: duplicate strategy name 'mask'; give one a `name:`"),
    (lambda d: d["strategies"].append({"batching": "bucket"}),
     "s.yaml: strategies[5]: a composed strategy needs a `name:`; presets are boundaries, bucket, mask, naive, pack, "
     "sorted_pack, token_budget, truncate"),
    (lambda d: d["strategies"].append({"name": "x", "readout": "packed"}),
     "s.yaml: strategies[5].readout: unknown value 'packed' (did you mean 'pack'?); valid: last, mask, pack, pack_sorted"),
    (lambda d: d.pop("strategies"), "s.yaml: strategies: is required"),
    (lambda d: d["strategies"].append({"boundaries": {"boundaries": [32, 16]}}),
     "s.yaml: strategies[5].boundaries.boundaries: must be increasing positive lengths, e.g. [16, 32, 64], "
     "got [32, 16]"),
    (lambda d: d["strategies"].append({"mask": {"boundaries": [8]}}),
     "s.yaml: strategies[5].mask.boundaries: is only used with batching: boundaries"),
    (lambda d: d["strategies"].append({"mask": {"pad_multiple": -8}}),
     "s.yaml: strategies[5].mask.pad_multiple: must be >= 0, got -8"),
    (lambda d: d["data"].update(train_size=10**9),
     "s.yaml: data.train_size: (train_size + eval_size) x the longest length = 40,000,001,920 tokens of padded "
     "matrix, over the limit of 268,435,456 (2 GiB)"),
    (lambda d: d["train"].update({"\n": 1}), "s.yaml: train.'\\n': unknown key; valid: amp, batch_size, compile, "
     "cudnn_benchmark, epochs, eval_batch_size, eval_every, loader, lr, max_time_s, target_accuracy, until_target, "
     "warmup_steps"),
    (lambda d: d.update(model=[1]), "s.yaml: model: must be a mapping, got a list"),
    (lambda d: d.update(launch={"nproc": 0}), "s.yaml: launch.nproc: must be > 0, got 0"),
    (lambda d: d.update(launch={"nprocs": 2}), "s.yaml: launch.nprocs: unknown key (did you mean 'nproc'?); "
                                               "valid: backend, nproc"),
    (lambda d: d.update(launch={"backend": "mpi"}),
     "s.yaml: launch.backend: unknown value 'mpi'; valid: auto, gloo, nccl"),
    (lambda d: d["strategies"].append({"bucket": {"name": "b2", "deal": "balance"}}),
     "s.yaml: strategies[5].bucket.deal: unknown value 'balance' (did you mean 'balanced'?); valid: per_rank, balanced"),
])
def test_bad_suites_give_one_exact_sentence(tmp_path, tiny_dict, change, message):
    change(tiny_dict)
    assert _error(tmp_path, tiny_dict) == message


def test_bad_files(tmp_path):
    with pytest.raises(SuiteError, match=r"^nope\.yaml: no such file$"):
        load_suite("nope.yaml")
    assert _error(tmp_path, "name: x\nseeds: [0\n") == (
        "s.yaml: invalid YAML: line 3, column 1: expected ',' or ']', but got '<stream end>'")
    assert _error(tmp_path, "- a list\n") == "s.yaml: must be a mapping of keys, got a list"


def test_bad_overrides(tmp_path, tiny_dict):
    assert _error(tmp_path, tiny_dict, ("train.batch_size",)) == (
        "s.yaml: --set: expected key.path=value, got 'train.batch_size'")
    assert _error(tmp_path, tiny_dict, ("strategies.9=mask",)) == (
        "s.yaml: strategies.9: no list item '9' (the list has 5)")
    assert _error(tmp_path, tiny_dict, ("train.epochs=-1",)) == "s.yaml: train.epochs: must be > 0, got -1"
    assert _error(tmp_path, tiny_dict, ("train.lr=.inf",)) == "s.yaml: train.lr: must be finite, got inf"


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_validates(path):
    suite = load_suite(path, allow_code=True)  # own-model.yaml's model is examples/models.py, code of this repository
    assert suite.name == path.stem
