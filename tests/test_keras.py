"""Keras strategies (framework: keras): the seeded PyTorch model's weights copied into Keras give its loss and
gradients, per backend installed; a Keras suite runs through `lstmbench run` in fresh interpreters, on the
PyTorch strategy's own batches from the same weights, and its rows go through report, recommend and compare;
what Keras cannot take is refused in one line. Each backend runs in a fresh interpreter: Keras reads KERAS_BACKEND
once, at import."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lstmbench.data import make_data
from lstmbench.errors import RunFailed, SuiteError
from lstmbench.measure.keras_train import UNMASKABLE, refuse_unmaskable
from lstmbench.suite import parse_strategy, suite_from_dict
from tests.conftest import TINY, write_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "keras.yaml"
TRUNCATE = 12  # the JAX strategy's max_len: the scaled-down suite's lengths run to 32
BACKENDS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}  # backend -> the package it needs


def needs(backend: str) -> None:
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"needs keras and {BACKENDS[backend]} (the keras extra)")


def keras_suite(**strategies_and_more) -> dict:
    """TINY with one seed, the mask strategy and a Keras strategy per backend given."""
    raw = copy.deepcopy(TINY)
    raw.update(seeds=[0], ideal=False, strategies=["mask"])
    raw["train"].update(eval_every=3)
    raw.update(strategies_and_more)
    return raw


KERAS = lambda backend, name=None: {"name": name or f"keras-{backend}", "framework": "keras",  # noqa: E731
                                    "backend": backend}

# ----------------------------------------------------------------------------- the twin, per backend
TWIN = """
import json, sys
import numpy as np, torch, keras
from lstmbench.data import make_data
from lstmbench.measure.keras_twin import keras_twin, loss_and_gradients, state_dict_of, torch_gradients
from lstmbench.measure.model import loss_of, model_for
from lstmbench.measure.verify import PLAIN, References, _checkable, _float64, pieces, reference, rel_errors
from lstmbench.measure.verify import rounding_floors
from lstmbench.strategies import Strategy
from lstmbench.suite import StrategySpec, suite_from_dict

out = []
for raw in json.loads(sys.argv[1]):
    suite = suite_from_dict(raw)
    data = make_data(suite.data, 0).train
    model = model_for(suite.model, data, 0)
    idx = np.arange(16)
    batch = Strategy(StrategySpec(name="mask")).collate(data, idx)
    twin = keras_twin(model)
    with torch.no_grad():
        ours = float(loss_of(model(batch.tokens.long(), batch.lengths, "mask"), batch.labels))
    loss, grads = loss_and_gradients(twin, batch.tokens.numpy(), batch.labels.numpy())
    alone = pieces(PLAIN, data, idx, batch)
    ref = References(_float64(model))(alone)
    got = (loss, torch_gradients(model, twin, grads))
    floors = rounding_floors(reference(_checkable(model), alone), ref, 1e-4)
    errors = [rel_errors(got, ref), rel_errors(got, ref, floors)]
    back = model_for(suite.model, data, 0)
    back.load_state_dict(state_dict_of(back, twin))
    with torch.no_grad():
        moved = float((back(batch.tokens, batch.lengths, "mask") - model(batch.tokens, batch.lengths, "mask")).abs().max())
    out.append({"ours": ours, "theirs": loss, "errors": errors, "moved": moved})
print(json.dumps({"backend": keras.backend.backend(), "results": out}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_weights_copied_into_keras_give_the_same_loss_and_gradients(backend: str):
    """1 and 2 layers, uni- and bidirectional, in one interpreter per backend: Keras's loss equals the PyTorch
    model's masked loss, its gradients (read back in PyTorch's layout) equal the float64 per-sequence reference's
    to float32 precision, and its weights copied back into PyTorch compute the same logits."""
    needs(backend)
    # the mapping is the same code on every backend: JAX (whose XLA compiles each new op, 5 s a model) checks two
    shapes = [(1, False), (2, True)] if backend == "jax" else [(1, False), (2, False), (1, True), (2, True)]
    configs = [{**TINY, "seeds": [0], "strategies": ["mask"],
                "model": {**TINY["model"], "num_layers": layers, "bidirectional": bidirectional}}
               for layers, bidirectional in shapes]
    r = subprocess.run([sys.executable, "-c", TWIN, json.dumps(configs)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["backend"] == backend
    for result in got["results"]:
        assert abs(result["ours"] - result["theirs"]) <= 1e-5 * abs(result["ours"])  # float32
        plain, floored = result["errors"]
        assert plain[0] < 1e-6 and floored[0] == plain[0]
        # measured below 1e-6, but 1.3e-4 on TensorFlow's head bias, whose gradient nearly cancels at
        # initialisation (2e-8 of float32 rounding on 1.7e-4): judged against float32's own rounding there, 2.4e-5,
        # within the runs' float32 tolerance (1e-4)
        assert plain[1] < 1e-3 and floored[1] < 1e-4
        assert result["moved"] == 0.0


# ----------------------------------------------------------------------------- a suite, end to end
@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    """The committed suites/keras.yaml through `lstmbench run`, scaled down as tests/test_suites_e2e.py scales every
    suite (which leaves this one to this fixture), with each installed backend's Keras strategy, JAX's added:
    (its results folder, {backend: its strategy's name})."""
    from tests.test_suites_e2e import scaled

    if importlib.util.find_spec("keras") is None:
        pytest.skip("needs keras (the keras extra)")
    raw = yaml.safe_load(SUITE.read_text())
    names = {parse_strategy(item).backend: parse_strategy(item).name for item in raw["strategies"]} | {
        "jax": "keras-truncate-jax"}
    installed = {b: n for b, n in names.items() if b and importlib.util.find_spec(BACKENDS[b])}
    strategies = [item for item in raw["strategies"] if parse_strategy(item).backend in ("", *installed)]
    # JAX's strategy truncates: a Keras strategy that changes the computation is checked against its claim
    strategies += [{**KERAS("jax", installed["jax"]), "padding": "truncate", "max_len": TRUNCATE}] \
        if "jax" in installed else []
    sets, options = scaled(raw)
    out = tmp_path_factory.mktemp("keras") / "results"
    r = subprocess.run([sys.executable, "-m", "lstmbench", "run", str(SUITE), "--out", str(out), *sets, *options,
                        "--set", f"strategies={json.dumps(strategies)}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out / raw["name"], installed


def stored(folder: Path) -> dict[str, dict]:
    return {row["strategy"]: row for f in folder.glob("*.jsonl") for row in map(json.loads, f.read_text().splitlines())}


@pytest.mark.slow
def test_a_keras_suite_trains_the_same_batches_from_the_same_weights(keras_run):
    folder, backends = keras_run
    rows = stored(folder)
    assert sorted(rows) == sorted(["pack", "mask", "bucket-mask", *backends.values()])
    assert all(row["status"] == "ok" for row in rows.values()), [row["error"] for row in rows.values()]
    mask = rows["mask"]  # the same random batches, padded to their longest
    loops = {"tensorflow": "keras-while-loop", "torch": "keras-python-loop", "jax": "keras-scan"}
    for backend, name in backends.items():
        row = rows[name]
        assert row["status"] == "ok", row["error"]
        assert (row["framework"], row["keras_backend"], row["lstm_kernel"]) == ("keras", backend, loops[backend])
        assert row["start_method"] == "spawn"  # a fresh interpreter, whatever the suite's start method
        # the same seeded weights and data, and the same plan: the same real and padded tokens, step by step
        assert (row["init_checksum"], row["data_checksum"]) == (mask["init_checksum"], mask["data_checksum"])
        assert row["steps"] == mask["steps"]
        if row["padding"] == "truncate":  # fewer tokens, and a row that says so, checked against its claim
            assert row["real_tokens"] < mask["real_tokens"] and row["padded_tokens"] < mask["padded_tokens"]
            assert (row["computation_note"], row["verified"]) == (f"truncates to {TRUNCATE} tokens",
                                                                  "differs as designed")
        else:
            assert (row["real_tokens"], row["padded_tokens"]) == (mask["real_tokens"], mask["padded_tokens"])
            assert (row["computation_note"], row["verified"]) == ("", "equivalent")
        assert row["verify_grad_rel_error"] < 1e-5
        assert row["verify_precision"] == "float32" and row["verify_tolerance"] == 1e-4
        assert row["tokens_per_s"] > 0 and row["train_time_s"] > 0 and row["warmup_steps"] == 1
        assert 0 <= row["eval_accuracy"] <= 1 and 0 <= row["eval_accuracy_exact"] <= 1
        assert [point[1] for point in row["curve"]] == [point[1] for point in mask["curve"]]  # evaluated alike
        assert row["peak_mem_bytes"] > row["train_mem_bytes"] >= 0  # a few steps may grow nothing
        env = row["env"]
        assert env["keras_backend"] == backend and env["keras"].startswith("3.")
        # Keras compiles with XLA on JAX; TensorFlow's "auto" leaves XLA off on a CPU; torch has none
        assert env["keras_backend_version"] and env["keras_jit_compile"] is (backend == "jax")
        if backend == "tensorflow":
            assert (env["tf_intra_op_threads"], env["tf_inter_op_threads"]) == (row["threads"], 1)


@pytest.mark.slow
def test_keras_rows_go_through_report_and_recommend(keras_run):
    folder, backends = keras_run
    report = subprocess.run([sys.executable, "-m", "lstmbench", "report", str(folder)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    table = next(line for line in report.stdout.splitlines() if line.startswith("| keras-"))
    assert "exact (verified, float32 error" in table and "keras-" in table.split("|")[3]
    assert "Keras strategies (" in report.stdout and "fresh interpreter (Keras 3." in report.stdout
    recommend = subprocess.run([sys.executable, "-m", "lstmbench", "recommend", str(folder)], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert recommend.returncode == 0, recommend.stderr[-2000:]
    assert all(name in recommend.stdout for name in backends.values())  # weighed beside the PyTorch strategies


@pytest.mark.slow
def test_compare_gates_a_keras_strategy_like_any(keras_run, tmp_path):
    """Its measured row, as five seeds, against a baseline where it ran 30% faster: a regression named."""
    from click.testing import CliRunner

    from lstmbench.cli import main

    folder, backends = keras_run
    name = next(iter(backends.values()))
    row = stored(folder)[name]

    def write(where: Path, speed: float) -> Path:
        rows = [{**row, "seed": seed, "tokens_per_s": row["tokens_per_s"] * speed * (1 + 0.01 * seed),
                 "window_tokens_per_s": [w * speed for w in row["window_tokens_per_s"]]} for seed in range(5)]
        (where / row["suite"]).mkdir(parents=True)
        (where / row["suite"] / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return where

    result = CliRunner().invoke(main, ["compare", str(write(tmp_path / "base", 1.3)), str(write(tmp_path / "now", 1.0))])
    assert result.exit_code == 3, result.output
    assert name in result.output


# ----------------------------------------------------------------------------- what is refused
@pytest.mark.parametrize("absent, backend, extra", [("keras", "tensorflow", "keras"), ("jax", "jax", "keras-jax")])
def test_without_the_extra_a_keras_suite_is_refused_in_one_line(tmp_path, monkeypatch, absent: str, backend: str,
                                                                 extra: str):
    """A package absent (None in sys.modules: what find_spec then reports) and validate and run say which extra."""
    from click.testing import CliRunner

    from lstmbench.cli import main

    suite = write_suite(tmp_path, keras_suite(strategies=["mask", KERAS(backend, "keras-mask")]))
    monkeypatch.setitem(sys.modules, absent, None)
    for command in ("validate", "run"):
        r = CliRunner().invoke(main, [command, str(suite), *(["--out", str(tmp_path)] if command == "run" else [])])
        assert r.exit_code == 2, (command, r.output)
        assert r.stderr == (f"Error: {suite}: strategies[1]: keras-mask trains with Keras on {backend}, and this "
                            f"Python has no {absent}: install the {extra} extra (pip install 'lstmbench[{extra}]')\n")
    assert not list(tmp_path.glob("tiny*"))  # nothing ran, no folder made


@pytest.mark.parametrize("backend, verdict", [("tensorflow", "disturbed"), ("jax", "quiet")])
def test_xla_s_own_thread_pools_are_not_a_busy_machine(backend: str, verdict: str):
    """Measured: a Keras run on JAX queues its threads 8-9% of their time on 2 cores with nothing else running
    (XLA's pools); it is judged by the other processes' share, as a run with loader workers is. TensorFlow's run
    uses one op at a time and is judged by its own wait."""
    from lstmbench.measure.disturbance import judge
    from tests.factories import row

    env = {"run_wait_share": 0.087, "other_cpu_share": 0.005}
    assert judge(row(strategy="k", framework="keras", keras_backend=backend, env=env)).value == verdict


@pytest.mark.parametrize("change, message", [
    ({"strategies": [{**KERAS("torch"), "readout": "pack"}]},
     "strategies[0].readout: framework: keras reads past the padding with its mask: readout mask, got pack"),
    ({"strategies": [{"name": "k", "framework": "keras"}]},
     "strategies[0].backend: framework: keras needs a backend: tensorflow | torch | jax"),
    ({"strategies": [{"name": "m", "backend": "torch"}]},
     "strategies[0].backend: is a Keras backend: it goes with framework: keras"),
    ({"strategies": [{**KERAS("torch"), "backend": "theano"}]},
     "strategies[0].backend: unknown value 'theano'; valid: tensorflow, torch, jax"),
    ({"strategies": ["mask", KERAS("torch")], "launch": {"nproc": 2}},
     "launch.nproc: Keras strategies train in one process; DDP is PyTorch's (as strategies[1] asks)"),
    ({"strategies": [KERAS("torch")], "train": {**TINY["train"], "amp": "bf16"}},
     "train.amp: Keras strategies train in float32 (as strategies[0] asks)"),
    ({"strategies": [KERAS("torch")], "model": {"factory": "models.py:build"}},
     "model.factory: your own model has no Keras twin; Keras strategies train lstmbench's model (as strategies[0] "
     "asks)"),
    ({"strategies": [KERAS("torch")], "model": {**TINY["model"], "num_layers": 2, "dropout": 0.2}},
     "model.dropout: Keras's LSTM dropout (one mask a sequence, on each layer's inputs) is not PyTorch's between "
     "layers; Keras strategies train without it (as strategies[0] asks)"),
    ({"strategies": [KERAS("torch")], "data": {**TINY["data"], "task": "tag"}},
     "data.task: Keras strategies classify sequences; tag is not mapped (as strategies[0] asks)"),
])
def test_what_a_keras_strategy_cannot_take_is_refused_in_one_line(change: dict, message: str):
    raw = keras_suite(**change)
    with pytest.raises(SuiteError) as e:
        suite_from_dict(raw, "s.yaml")
    assert str(e.value) == f"s.yaml: {message}"


def test_a_suite_without_keras_strategies_keeps_its_hash():
    """framework and backend at their defaults stay out of the resolved suite: stored results still match."""
    suite = suite_from_dict(keras_suite(strategies=["mask", "pack"]))
    assert all("framework" not in s and "backend" not in s for s in suite.to_dict()["strategies"])
    keras = suite_from_dict(keras_suite(strategies=["mask", KERAS("torch")]))
    assert keras.to_dict()["strategies"][1] == {**keras.to_dict()["strategies"][1], "framework": "keras",
                                                "backend": "torch"}


@pytest.mark.parametrize("where, length, what", [
    (3, None, "training sequence 3 holds token 0 inside its length"),
    (5, 0, "training sequence 5 is empty (a fully masked row)"),
])
def test_data_keras_would_mask_wrongly_is_refused_in_keras_words(where: int, length: int | None, what: str):
    """mask_zero masks every 0: a 0 inside a sequence (not right-padded) or an empty one (fully masked)."""
    splits = make_data(suite_from_dict(keras_suite()).data, 0)
    if length is None:
        splits.train.padded[where, 1] = 0
    else:
        splits.train.lengths[where] = length
        splits.train.padded[where] = 0
    with pytest.raises(RunFailed) as e:
        refuse_unmaskable(splits)
    assert str(e.value) == f"{what}: {UNMASKABLE}"
    assert e.value.kind == "error"


def test_the_generated_data_is_right_padded_and_never_empty():
    for seed in range(3):
        refuse_unmaskable(make_data(suite_from_dict(keras_suite()).data, seed))  # nothing raised
    assert np.all(make_data(suite_from_dict(keras_suite()).data, 0).train.lengths > 0)


def test_a_keras_winner_s_snippet_says_who_trained_it_and_compiles():
    """A Keras strategy that wins: the snippet keeps its composition (framework and backend included, which
    lstmbench.batching takes) and says that Keras trained it."""
    from lstmbench.report.recommendation import python_snippet, recommend_rows
    from lstmbench.results.rows import rows_frame
    from tests.factories import config, run_rows

    cfg = config(["mask", KERAS("tensorflow", "keras-mask")], seeds=3)
    (rec,) = recommend_rows(rows_frame(run_rows(cfg, {"mask": {"tps": [50.0] * 3, "acc": [0.9] * 3},
                                                      "keras-mask": {"tps": [80.0] * 3, "acc": [0.9] * 3}}, seeds=3)))
    assert rec.winner == "keras-mask"
    assert rec.strategy == {"name": "keras-mask", "batching": "random", "padding": "batch", "readout": "mask",
                            "framework": "keras", "backend": "tensorflow"}
    code = python_snippet(rec)
    compile(code, "<keras>", "exec")
    assert ("# keras-mask was trained by Keras on tensorflow (Embedding(mask_zero=True), layers.LSTM): these are its "
            "batches, for a PyTorch loop as below, or as Keras's input") in code.splitlines()
    from lstmbench.batching import batch_sampler

    assert len(list(batch_sampler([3, 5, 2, 7], rec.strategy, batch_size=2, seed=0))) == 2


def test_verify_leaves_keras_strategies_to_their_runs_and_says_so(tmp_path):
    from click.testing import CliRunner

    from lstmbench.cli import main

    line = ("Keras strategies (keras-mask): checked in each of their runs, in their backend's own interpreter, against "
            "the same float64 per-sequence reference (the rows' `verified`).")
    mixed = write_suite(tmp_path, keras_suite(strategies=["mask", KERAS("tensorflow", "keras-mask")]), "mixed.yaml")
    r = CliRunner().invoke(main, ["verify", str(mixed)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == line and "All 1 strategies verified: 1 equivalent" in r.stdout
    alone = write_suite(tmp_path, keras_suite(strategies=[KERAS("tensorflow", "keras-mask")]), "alone.yaml")
    r = CliRunner().invoke(main, ["verify", str(alone)])
    assert (r.exit_code, r.stdout) == (0, line + "\n\n")


def test_a_keras_strategy_is_refused_under_the_user_s_torchrun():
    """Every rank of a torchrun job runs every planned run: a Keras strategy would train once per rank, side by side."""
    from lstmbench.run.runner import run_suite

    suite = suite_from_dict(keras_suite(strategies=["mask", KERAS("torch")]), "s.yaml")
    with pytest.raises(SuiteError) as e:
        run_suite(suite, group=object())
    assert str(e.value) == ("s.yaml: strategies[1]: a Keras strategy trains in one process of its own; run this suite "
                            "without torchrun")


def test_a_keras_process_that_dies_without_a_word_is_a_crashed_row(monkeypatch):
    """The interpreter exits before reporting (here: one that is not Python, exiting 1 at once): a `crashed` row
    naming the exit code, and the suite goes on."""
    from lstmbench.run.worker import run_keras_process

    suite = suite_from_dict(keras_suite(strategies=[KERAS("torch")]), "s.yaml")
    monkeypatch.setattr(sys, "executable", "/bin/false")
    row = run_keras_process(suite, suite.strategies[0], 0, "cpu")
    assert (row.status, row.strategy, row.start_method, row.framework) == ("crashed", "keras-torch", "spawn", "keras")
    assert row.error == "the Keras run's process exited with code 1 before reporting: no output"
