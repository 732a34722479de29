"""Your model, not ours: a suite's `model.factory` benchmarked under every strategy, as a user runs it (the CLI,
the forkserver's run processes), with every guarantee the built-in model has: the same seeded weights for every
strategy of a seed, each run's own equivalence check, verify's verdicts (and a MISMATCH for a model that reads
its padding), the model's identity in every row, and one line for each way a factory can be wrong."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from lstmbench.batching import run_rnn
from lstmbench.cli import main
from lstmbench.errors import BatchingError, SuiteError
from lstmbench.suite import load_suite
from tests.test_series import make_series, write

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models.py"
SOURCE_HASH = hashlib.sha256(MODELS.read_bytes()).hexdigest()[:16]
SYNTHETIC = {"source": "synthetic", "task": "classify", "train_size": 64, "eval_size": 32, "vocab_size": 16,
             "lengths": {"dist": "lognormal", "median": 8, "sigma": 0.8, "min": 2, "max": 40}}


def suite_file(folder: Path, factory: str, data: dict | None = None, options: dict | None = None,
               strategies: list | None = None, name: str = "mine") -> Path:
    """A scaled-down suite beside a copy of examples/models.py (a factory file is relative to its suite)."""
    shutil.copy(MODELS, folder / "models.py")
    raw = {"name": name, "seeds": [0, 1], "threads": 1, "data": data or SYNTHETIC,
           "model": {"factory": factory, "options": options or {}},
           "train": {"batch_size": 16, "epochs": 1, "lr": 0.01, "warmup_steps": 1},
           "strategies": strategies or ["naive", "mask", "pack", "bucket"]}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def lstmbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstmbench", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def rows_in(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.rglob("*.jsonl")) for line in f.read_text().splitlines()]


def series_data(folder: Path) -> dict:
    xs, ys = make_series(96, features=2)
    write(folder / "series.npz", xs, ys)
    return {"source": "series", "path": "series.npz", "eval_size": 24}


CASES = {  # factory -> (data, options)
    "gru_classifier": (lambda folder: SYNTHETIC, {"embed": 8, "hidden": 8}),
    "attention_lstm": (lambda folder: SYNTHETIC, {"embed": 8, "hidden": 8}),
    "conv_lstm": (series_data, {"channels": 4, "hidden": 8}),
    "lstm_tagger": (lambda folder: {**SYNTHETIC, "task": "tag"}, {"embed": 8, "hidden": 8}),
}


@pytest.mark.slow
@pytest.mark.parametrize("factory", sorted(CASES))
def test_each_example_model_runs_every_strategy_through_the_cli(tmp_path: Path, factory: str):
    make, options = CASES[factory]
    path = suite_file(tmp_path, f"models.py:{factory}", make(tmp_path), options)
    r = lstmbench("run", path, "--out", tmp_path / "results", "--allow-code", "--settle", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = rows_in(tmp_path / "results")
    assert len(rows) == 10 and all(row["status"] == "ok" for row in rows)  # 4 strategies and the ideal, 2 seeds
    assert {row["start_method"] for row in rows} == {"forkserver"}
    for seed in (0, 1):  # the same seeded weights and data for every strategy of a seed
        mine = [row for row in rows if row["seed"] == seed]
        assert len({row["init_checksum"] for row in mine}) == 1 and len({row["data_checksum"] for row in mine}) == 1
    assert {(row["model_factory"], row["model_source_hash"]) for row in rows} == {(f"models.py:{factory}",
                                                                                  SOURCE_HASH)}
    assert len({row["model_params"] for row in rows}) == 1 and rows[0]["model_params"] > 0
    verified = {row["strategy"]: row["verified"] for row in rows if row["strategy"] != "ideal"}
    assert verified == {"naive": "differs as designed", "mask": "equivalent", "pack": "equivalent",
                        "bucket": "equivalent"}


PADDING_DEPENDENT = '''
import torch
from torch import nn


class ReadsThePadding(nn.Module):
    """Ignores the readout: always the output at the last padded step, whatever the sequence's length."""

    def __init__(self, spec):
        super().__init__()
        self.embed = nn.Embedding(spec.vocab_size, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, spec.num_classes)

    def forward(self, inputs, lengths, readout):
        return self.head(self.lstm(self.embed(inputs))[0][:, -1])


def build(spec):
    return ReadsThePadding(spec)


def wide(spec):
    return nn.Sequential()


def raises(spec):
    raise ValueError(f"no option called {sorted(spec.options)[0]!r}")


class Shape(nn.Module):
    def __init__(self, spec, nan=False):
        super().__init__()
        self.spec, self.nan, self.w = spec, nan, nn.Parameter(torch.zeros(1))

    def forward(self, inputs, lengths, readout):
        out = torch.zeros(inputs.shape[0], self.spec.num_classes + (0 if self.nan else 1)) + self.w
        return out * float("nan") if self.nan else out


def wrong_shape(spec):
    return Shape(spec)


def not_finite(spec):
    return Shape(spec, nan=True)
'''


def test_verify_calls_the_exact_ones_equivalent_and_a_padding_dependent_model_a_mismatch(tmp_path: Path):
    good = tmp_path / "good"
    good.mkdir()
    r = CliRunner().invoke(main, ["verify", str(suite_file(good, "models.py:gru_classifier", options={"embed": 8,
                                                                                                     "hidden": 8})),
                                  "--allow-code", "--batches", "1"])
    assert r.exit_code == 0, r.output
    assert "All 4 strategies verified: 3 equivalent, 1 differ as designed, 0 mismatch." in r.output
    assert "first departs" not in r.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "padding.py").write_text(PADDING_DEPENDENT)
    r = CliRunner().invoke(main, ["verify", str(suite_file(bad, "padding.py:build")), "--allow-code", "--batches",
                                  "1"])
    assert r.exit_code == 1
    assert "All 4 strategies verified: 0 equivalent, 1 differ as designed, 3 mismatch." in r.output
    for name in ("mask", "pack", "bucket"):  # the first sequence whose output departs, and by how much
        assert re.search(rf"\n{name}: first departs at sequence \d+ \(length \d+\): its logits differ by "
                         r"[0-9.e-]+ at most, in the batch against alone\.\n", r.output), r.output


def errors(tmp_path: Path, factory: str, *extra: str, options: dict | None = None) -> str:
    (tmp_path / "padding.py").write_text(PADDING_DEPENDENT)
    path = suite_file(tmp_path, factory, options=options)
    r = CliRunner().invoke(main, ["validate", str(path), *extra])
    assert r.exit_code == 2, r.output
    return r.stderr.removeprefix(f"Error: {path}: ")


@pytest.mark.parametrize("factory, options, sentence", [
    ("padding.py:build", None, None),  # fine: validate says ok
    ("missing.py:build", None, "model.factory: missing.py:build: cannot read its file: {folder}/missing.py: no such "
                               "file\n"),
    ("padding.py:nothing", None, "model.factory: padding.py:nothing: padding.py has no function 'nothing'\n"),
    ("padding.py:raises", {"width": 3}, "model.factory: padding.py:raises raised ValueError: no option called "
                                        "'width'\n"),
    ("padding.py:wide", None, "model.factory: padding.py:wide's model raised TypeError: Sequential.forward() takes 2 "
                              "positional arguments but 4 were given on a batch read with mask\n"),
    ("padding.py:wrong_shape", None, "model.factory: padding.py:wrong_shape's model returned shape (4, 3) for 4 "
                                     "sequences and 2 classes (classify); expected shape (4, 2)\n"),
    ("padding.py:not_finite", None, "model.factory: padding.py:not_finite's model returned logits that are not "
                                    "finite (NaN or infinite) on its first batch\n"),
    ("nosuchpackage.models:build", None, "model.factory: no module named 'nosuchpackage' to import (from "
                                         "nosuchpackage.models:build)\n"),
])
def test_each_way_a_factory_is_wrong_is_one_line(tmp_path: Path, factory: str, options, sentence):
    if sentence is None:
        path = suite_file(tmp_path, factory)
        (tmp_path / "padding.py").write_text(PADDING_DEPENDENT)
        r = CliRunner().invoke(main, ["validate", str(path), "--allow-code"])
        assert r.exit_code == 0 and "ok: suite 'mine'" in r.output, r.output
        return
    assert errors(tmp_path, factory, "--allow-code", options=options) == sentence.format(folder=tmp_path)


def test_a_suite_naming_code_runs_it_only_with_allow_code(tmp_path: Path):
    (tmp_path / "padding.py").write_text(PADDING_DEPENDENT)
    path = suite_file(tmp_path, "padding.py:build")
    for command in (["run", str(path), "--out", str(tmp_path / "r")], ["validate", str(path)],
                    ["verify", str(path)], ["lengths", str(path), "--tune"]):
        r = CliRunner().invoke(main, command)
        assert r.exit_code == 2 and r.stderr == (
            f"Error: {path}: model.factory: 'padding.py:build' is Python code that lstmbench would import and run; "
            "give --allow-code to run a suite's own model (only for a suite you trust)\n"), command
    assert not (tmp_path / "r").exists()
    r = CliRunner().invoke(main, ["lengths", str(path)])  # the pad arithmetic runs no model
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("raw, sentence", [
    ({"factory": "models.py"}, "model.factory: must be file.py:function (a file beside the suite) or "
                               "package.module:function, got 'models.py'"),
    ({"factory": "/abs/models.py:build"}, "model.factory: must be relative to the suite file, got "
                                          "'/abs/models.py:build'"),
    ({"factory": "models.py:build", "hidden_size": 128}, "model.hidden_size: is the built-in model's setting; with "
                                                         "model.factory, your model's settings go in model.options"),
    ({"options": {"hidden": 8}}, "model.options: are your model's settings: they go with model.factory"),
    ({"factory": "models.py:build", "options": [1]}, "model.options: must be a mapping of option names to values, "
                                                     "got a list"),
])
def test_the_model_section_is_checked(tmp_path: Path, raw: dict, sentence: str):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "strategies": ["mask"], "model": raw}))
    with pytest.raises(SuiteError) as e:
        load_suite(path, allow_code=True)
    assert str(e.value) == f"{path}: {sentence}"


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("readout", ["mask", "pack"])
def test_run_rnn_is_exact_per_sequence(kind, bidirectional: bool, readout: str):
    torch.manual_seed(0)
    rnn = kind(3, 5, num_layers=2, batch_first=True, bidirectional=bidirectional)
    lengths = torch.tensor([7, 5, 2])
    x = torch.randn(3, 7, 3)
    output, last = run_rnn(rnn, x, lengths, readout)
    for b, n in enumerate(lengths.tolist()):
        alone, h_n = rnn(x[b:b + 1, :n])
        h_n = h_n if kind is nn.GRU else h_n[0]
        directions = 2 if bidirectional else 1
        torch.testing.assert_close(output[b, :n], alone[0])
        torch.testing.assert_close(last[b], torch.cat(list(h_n[-directions:, 0]), dim=0))
        assert not output[b, n:].any()


@pytest.mark.parametrize("call, sentence", [
    (lambda: run_rnn(nn.RNN(3, 4, batch_first=True), torch.zeros(2, 5, 3), torch.tensor([5, 2]), "mask"),
     "run_rnn: rnn must be an nn.LSTM or an nn.GRU, got RNN"),
    (lambda: run_rnn(nn.GRU(3, 4), torch.zeros(2, 5, 3), torch.tensor([5, 2]), "mask"),
     "run_rnn: rnn must be batch_first=True (inputs arrive [B, T, ...])"),
    (lambda: run_rnn(nn.GRU(3, 4, batch_first=True), torch.zeros(2, 5, 3), torch.tensor([5, 2]), "packed"),
     "run_rnn: readout must be one of pack, mask, last, got 'packed'"),
    (lambda: run_rnn(nn.GRU(3, 4, batch_first=True), torch.zeros(2, 5, 3), torch.tensor([6, 2]), "mask"),
     "run_rnn: lengths must be in [1, 5] (the time steps), got 6"),
    (lambda: run_rnn(nn.GRU(3, 4, batch_first=True), torch.zeros(2, 5, 2), torch.tensor([5, 2]), "last"),
     "run_rnn: x has 2 features per step, but the rnn's input_size is 3"),
])
def test_run_rnn_refuses_bad_arguments_in_one_sentence(call, sentence: str):
    with pytest.raises(BatchingError) as e:
        call()
    assert str(e.value) == sentence


@pytest.mark.slow
def test_lengths_tune_probes_the_suites_own_model(tmp_path: Path):
    path = suite_file(tmp_path, "models.py:gru_classifier", options={"embed": 8, "hidden": 8})
    r = CliRunner().invoke(main, ["lengths", str(path), "--tune", "--allow-code", "--budget-s", "2"])
    assert r.exit_code == 0, r.output
    assert "Proposal" in r.output and "tokens/s" in r.output


def test_the_builtin_model_stays_the_default_and_rows_say_so(tmp_path: Path):
    from lstmbench.measure.train import run_one
    from tests.conftest import TINY, write_suite

    suite = load_suite(write_suite(tmp_path, {**TINY, "seeds": [0], "strategies": ["mask"]}))
    record = run_one(suite, suite.strategies[0], 0, torch.device("cpu"))
    assert (record.model_factory, record.model_source_hash) == ("", "") and record.model_params == 1210
    assert np.isfinite(record.tokens_per_s)


def test_the_builtin_model_is_itself_a_factory(tmp_path: Path):
    """lstmbench.measure.model:lstm_classifier through the factory path trains exactly as the default model."""
    from lstmbench.measure.train import run_one
    from tests.conftest import TINY, write_suite

    builtin = load_suite(write_suite(tmp_path, {**TINY, "seeds": [0], "strategies": ["mask"]}, "a.yaml"))
    options = {k: TINY["model"][k] for k in ("embed_dim", "hidden_size", "num_layers", "bidirectional", "dropout")}
    factory = load_suite(write_suite(tmp_path, {**TINY, "seeds": [0], "strategies": ["mask"], "model": {
        "factory": "lstmbench.measure.model:lstm_classifier", "options": options}}, "b.yaml"), allow_code=True)
    a, b = (run_one(s, s.strategies[0], 0, torch.device("cpu")) for s in (builtin, factory))
    assert (a.eval_accuracy, a.final_loss, a.real_tokens) == (b.eval_accuracy, b.final_loss, b.real_tokens)
    assert (a.model_params, b.model_params) == (1210, 1210) and b.model_factory.endswith(":lstm_classifier")
    assert b.model_source_hash == hashlib.sha256((ROOT / "lstmbench/measure/model.py").read_bytes()).hexdigest()[:16]


@pytest.mark.slow
def test_a_suites_own_model_trains_as_a_ddp_job(tmp_path: Path):
    """torchrun's ranks each import the factory's file and build the same seeded model."""
    path = suite_file(tmp_path, "models.py:gru_classifier", options={"embed": 8, "hidden": 8}, strategies=["mask"])
    r = lstmbench("run", path, "--out", tmp_path / "results", "--allow-code", "--nproc", "2", "--set", "seeds=[0]",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = rows_in(tmp_path / "results")
    assert sorted((row["strategy"], row["status"], row["world_size"], row["start_method"]) for row in rows) == [
        ("ideal", "ok", 2, "torchrun"), ("mask", "ok", 2, "torchrun")]
    assert {row["model_factory"] for row in rows} == {"models.py:gru_classifier"}
