"""Hostile input, case by case (issue 13): each gets one `Error:` sentence and exit 2, never a traceback or a hang.

The cases come in the issue's families: odd YAML, special files, small or odd data, malformed rows, what `run`
would refuse, and the rest. `scripts/hostile.py` runs the same kinds of case as a user would, side by side.
"""
from __future__ import annotations

import json
import os
import time
import tracemalloc

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from lstmbench.cli import MAX_MESSAGE, main
from lstmbench.measure.probes import cpu_bf16_lstm
from lstmbench.measure.record import SCHEMA_VERSION
from tests.factories import row

BASE = """name: tiny
seeds: [0]
data: {train_size: 64, eval_size: 32, vocab_size: 16, lengths: {median: 8, max: 40}}
model: {embed_dim: 8, hidden_size: 12}
train: {batch_size: 16, epochs: 1, warmup_steps: 1}
strategies: [mask]
ideal: false
"""
# nine levels of nine: 9**9 (387 million) values from 300 bytes
BOMB = "[&a [x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]" for p, c in zip("abcdefgh", "bcdefghi")) + "]"
ROWS = [row(schema_version=2, suite_hash="h", seed=s, tokens_per_s=100.0 + s, eval_accuracy=0.9,
            eval_accuracy_exact=0.9, train_time_s=1.0, steps=4) for s in range(3)]


def lines(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def at(tmp_path, monkeypatch):
    """Run lstmbench in a scratch folder holding `files` (text, or None for a FIFO); (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(files: dict[str, str | None], *args: str) -> tuple[int, str]:
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if text is None:
                os.mkfifo(path)
            else:
                path.write_text(text)
        r = CliRunner().invoke(main, list(args))
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        return r.exit_code, r.stderr

    return run


CASES = {
    # 2. YAML that is hostile or odd
    "alias bomb under description": (
        {"s.yaml": BASE.replace("name: tiny\n", f"name: tiny\ndescription: {BOMB}\n")}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: expands to more than 10,000 values (aliases repeating aliases?); a suite "
        "holds a few hundred\n"),
    "alias bomb under seeds": (
        {"s.yaml": BASE.replace("seeds: [0]", f"seeds: {BOMB}")}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: expands to more than 10,000 values (aliases repeating aliases?); a suite "
        "holds a few hundred\n"),
    "alias bomb under sweep, given with --set": (
        {"s.yaml": BASE}, ["validate", "s.yaml", "--set", f"sweep={{train.lr: {BOMB}}}"],
        "Error: s.yaml: --set: sweep: expands to more than 10,000 values (aliases repeating aliases?); a suite "
        "holds a few hundred\n"),
    "a self-referencing alias": (
        {"s.yaml": BASE + "description: &d [*d]\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: expands to more than 10,000 values (aliases repeating aliases?); a suite "
        "holds a few hundred\n"),
    "nesting 500 deep": (
        {"s.yaml": BASE + "description: " + "[" * 500 + "]" * 500 + "\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: line 8, column 45: nested more than 32 levels deep\n"),
    "an integer of 400 digits": (
        {"s.yaml": BASE + "threads: " + "9" * 400 + "\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: line 8, column 10: an integer of 400 digits; no setting takes one beyond "
        "2**64\n"),
    "an integer of 5,000 digits (past Python's own limit)": (
        {"s.yaml": BASE + "threads: -" + "9" * 5000 + "\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: line 8, column 10: an integer of 5,001 digits; no setting takes one beyond "
        "2**64\n"),
    "a seed of 2**64": (
        {"s.yaml": BASE.replace("seeds: [0]", "seeds: [18446744073709551616]")}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: line 2, column 9: an integer of 20 digits; no setting takes one beyond "
        "2**64\n"),
    "a seed of 2**32": (
        {"s.yaml": BASE.replace("seeds: [0]", "seeds: [4294967296]")}, ["validate", "s.yaml"],
        "Error: s.yaml: seeds: must be integers from 0 to 4294967295 (2**32 - 1), got [4294967296]\n"),
    "a duplicate top-level key": (
        {"s.yaml": BASE + "train: {epochs: 2}\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: line 8, column 1: the key 'train' is given twice in one mapping (first at "
        "line 5); the later would silently replace the first\n"),
    "a duplicate nested key": (
        {"s.yaml": BASE.replace("epochs: 1,", "epochs: 1, epochs: 3,")}, ["validate", "s.yaml"],
        "Error: s.yaml: invalid YAML: line 5, column 36: the key 'epochs' is given twice in one mapping (first at "
        "line 5); the later would silently replace the first\n"),
    "an infinite learning rate": (
        {"s.yaml": BASE.replace("epochs: 1,", "epochs: 1, lr: .inf,")}, ["validate", "s.yaml"],
        "Error: s.yaml: train.lr: must be finite, got inf\n"),
    "a long list is quoted short": (
        {"s.yaml": BASE + "description: [" + ", ".join(["x"] * 5000) + "]\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: description: must be a string, got ['x', 'x', 'x', 'x', 'x', 'x', ...]\n"),
    "a huge string where a number goes": (
        {"s.yaml": BASE.replace("epochs: 1,", "epochs: " + "x" * 100_000 + ",")}, ["validate", "s.yaml"],
        "Error: s.yaml: train.epochs: must be an integer, got 'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx'\n"),
    # 3. special files
    "the suite is a FIFO": (
        {"fifo.yaml": None}, ["validate", "fifo.yaml"],
        "Error: fifo.yaml: a FIFO (named pipe), not a regular file; a suite file must be a regular file\n"),
    "the suite is /dev/zero": (
        {}, ["validate", "/dev/zero"],
        "Error: /dev/zero: a character device, not a regular file; a suite file must be a regular file\n"),
    "the suite is over a megabyte": (
        {"big.yaml": BASE + "#" * 2**21 + "\n"}, ["validate", "big.yaml"],
        "Error: big.yaml: 2 MiB, over the limit of 1 MiB for a suite file\n"),
    "data.path is a FIFO": (
        {"d.csv": None, "s.yaml": BASE.replace("data: {", "data: {source: text, path: d.csv, ")},
        ["validate", "s.yaml"],
        "Error: s.yaml: data.path: d.csv: a FIFO (named pipe), not a regular file; a data file must be a regular "
        "file\n"),
    "data.path is a folder": (
        {"d.csv/x": "", "s.yaml": BASE.replace("data: {", "data: {source: text, path: d.csv, ")},
        ["validate", "s.yaml"],
        "Error: s.yaml: data.path: d.csv: a folder, not a regular file; a data file must be a regular file\n"),
    "lengths.file is a FIFO": (
        {"l.txt": None, "s.yaml": BASE.replace("lengths: {", "lengths: {dist: empirical, file: l.txt, ")},
        ["validate", "s.yaml"],
        "Error: s.yaml: data.lengths.file: l.txt: a FIFO (named pipe), not a regular file; a lengths file must be "
        "a regular file\n"),
    "lengths.file is /dev/zero": (
        {"s.yaml": BASE.replace("lengths: {", "lengths: {dist: empirical, file: /dev/zero, ")},
        ["validate", "s.yaml"],
        "Error: s.yaml: data.lengths.file: /dev/zero: a character device, not a regular file; a lengths file "
        "must be a regular file\n"),
    "a NUL byte in data.path": (
        {"s.yaml": BASE.replace("data: {", 'data: {source: text, path: "d\\0.csv", ')}, ["validate", "s.yaml"],
        "Error: s.yaml: data.path: 'd\\x00.csv': a path cannot contain a NUL byte\n"),
    "a FIFO named .jsonl under the results": (
        {"r/tiny/a.jsonl": lines(ROWS), "r/tiny/b.jsonl": None}, ["export", "r", "-o", "x.json"],
        "Warning: r/tiny/b.jsonl: a FIFO (named pipe), not a regular file; skipped\n"),
    "/dev/zero linked as a .jsonl": (
        {"r/tiny/a.jsonl": lines(ROWS)}, ["export", "r", "r/zero.jsonl", "-o", "x.json"],
        "Error: r/zero.jsonl: a character device, not a result file or folder\n"),
    "export into a FIFO": (
        {"r/tiny/a.jsonl": lines(ROWS), "out.json": None}, ["export", "r", "-o", "out.json"],
        "Error: cannot write out.json: a FIFO (named pipe), not a regular file\n"),
    "report --out a file": (
        {"r/tiny/a.jsonl": lines(ROWS), "afile": ""}, ["report", "r", "--out", "afile"],
        "Error: cannot write the report to afile/tiny: afile is a file, not a folder\n"),
    # 4. small or odd data
    "three rows and a held-out fifth of none": (
        {"d.csv": "text,label\nab,a\ncd,b\nef,a\n",
         "s.yaml": BASE.replace("train_size: 64, eval_size: 32,", "source: text, path: d.csv, train_size: 0, eval_size: 0,")},
        ["validate", "s.yaml"],
        "Error: s.yaml: data: the eval split of seed 0 has a single class (label 0): accuracy would mean nothing; "
        "use more sequences\n"),
    "a text of a million characters": (
        {"d.jsonl": lines([{"text": "a" * 10**6, "label": 0}] + [{"text": f"ab{i}", "label": i % 2} for i in range(40)]),
         "s.yaml": BASE.replace("train_size: 64, eval_size: 32,", "source: text, path: d.jsonl, train_size: 0, eval_size: 0,")},
        ["validate", "s.yaml"],
        "Error: s.yaml: data: example 1 has 1,000,000 tokens after char tokenisation; sequences are at most "
        "20,000 steps long (an LSTM runs one step per token, in sequence: longer ones would train for hours); cut "
        "the texts\n"),
    "synthetic sequences of a million steps": (
        {"s.yaml": BASE.replace("max: 40", "max: 1000000")}, ["validate", "s.yaml"],
        "Error: s.yaml: data.lengths.max: 1,000,000 steps; sequences are at most 20,000 steps long (an LSTM runs "
        "one step per token, in sequence)\n"),
    "a label given as a list": (
        {"d.jsonl": lines([{"text": f"ab{i}", "label": [i % 2]} for i in range(40)])}, ["lengths", "d.jsonl"],
        "Error: d.jsonl: data.path: {tmp}/d.jsonl: row 1: the label [0] is not a class; a label is a string or an "
        "integer (one per sequence)\n"),
    # 5. malformed result rows
    "schema_version \"2\"": (
        {"r/tiny/a.jsonl": lines([{**ROWS[0], "schema_version": "2"}])}, ["report", "r"],
        "Error: no result rows in 1 file(s) under r (1 line(s) skipped; the first: r/tiny/a.jsonl:1: "
        "schema_version is \"2\", not an integer; skipped)\n"),
    "schema_version null": (
        {"r/tiny/a.jsonl": lines([{**ROWS[0], "schema_version": None}])}, ["compare", "r", "r"],
        "Error: no result rows in 1 file(s) under r (1 line(s) skipped; the first: r/tiny/a.jsonl:1: "
        "schema_version is missing; skipped)\n"),
    "a row without suite": (
        {"r/tiny/a.jsonl": lines([{k: v for k, v in ROWS[0].items() if k != "suite"}])}, ["export", "r", "-o", "x"],
        "Error: no result rows in 1 file(s) under r (1 line(s) skipped; the first: r/tiny/a.jsonl:1: suite is "
        "missing; skipped)\n"),
    "a row of a newer schema": (
        {"r/tiny/a.jsonl": lines(ROWS + [{**ROWS[0], "schema_version": 99}])}, ["report", "r"],
        f"Error: r/tiny/a.jsonl:4: schema_version 99 is newer than this lstmbench reads ({SCHEMA_VERSION}); upgrade "
        "lstmbench\n"),
    "a suite name that climbs out of the folder": (
        {"r/tiny/a.jsonl": lines(ROWS + [{**ROWS[0], "suite": "../../x"}])}, ["export", "r", "-o", "x.json"],
        "Warning: r/tiny/a.jsonl:4: suite is \"../../x\", not a suite name (letters, digits, '_', '.', '-'); "
        "skipped\n"),
    "NaN tokens/s in an ok row": (
        {"r/tiny/a.jsonl": lines(ROWS + [{**ROWS[0], "tokens_per_s": float("nan")}])}, ["export", "r", "-o", "x"],
        "Warning: r/tiny/a.jsonl:4: tokens_per_s is nan in an ok row (a measured number must be finite); "
        "skipped\n"),
    # 6. validate refuses what run would
    "amp fp16 on a CPU": (
        {"s.yaml": BASE.replace("epochs: 1,", "epochs: 1, amp: fp16,")}, ["validate", "s.yaml"],
        "Error: s.yaml: train.amp: fp16 needs a CUDA device, and this suite runs on cpu; use bf16 or none\n"),
    # 8. issue 27: options and settings past what can run
    "--shard in superscript digits": (
        {"s.yaml": BASE}, ["run", "s.yaml", "--shard", "\u00b2/2"],
        "Error: --shard: expected K/N with 1 <= K <= N (e.g. 2/4), got '\u00b2/2'\n"),
    "--until-stable nan": (
        {"s.yaml": BASE}, ["run", "s.yaml", "--until-stable", "nan"],
        "Error: --until-stable: expected a percentage (e.g. 5), got nan\n"),
    "--until-stable past the largest seed": (
        {"s.yaml": BASE.replace("seeds: [0]", "seeds: [4294967290]")}, ["run", "s.yaml", "--until-stable", "5"],
        "Error: --until-stable adds seeds after the suite's last, 4294967290: with --max-seeds 10 they would pass "
        "4294967295 (2**32 - 1, the largest seed); give the suite smaller seeds\n"),
    "a billion loader workers": (
        {"s.yaml": BASE.replace("epochs: 1,", "epochs: 1, loader: {workers: 1000000000},")}, ["validate", "s.yaml"],
        "Error: s.yaml: train.loader.workers: must be at most 64 (each is a process with its own copy of torch), "
        "got 1000000000\n"),
    "a billion threads": (
        {"s.yaml": BASE + "threads: 1000000000\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: threads: must be at most 1024 (0 = torch's default), got 1000000000\n"),
    "a suite name of 300 characters": (
        {"s.yaml": BASE.replace("name: tiny", "name: " + "a" * 300)}, ["validate", "s.yaml"],
        "Error: s.yaml: name: must be at most 100 characters (it names a results folder), got 300\n"),
    "a suite named report": (
        {"s.yaml": BASE.replace("name: tiny", "name: report")}, ["validate", "s.yaml"],
        "Error: s.yaml: name: must not be 'report', the name of every suite's report folder\n"),
    # 7. the rest
    "a sweep over the name": (
        {"s.yaml": BASE + "sweep: {name: [p, q]}\n"}, ["validate", "s.yaml"],
        "Error: s.yaml: sweep.name: cannot be swept: the name is the results folder that every variant's rows go "
        "to (and --resume reads)\n"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_hostile_case_is_one_sentence(at, tmp_path, name):
    files, args, expected = CASES[name]
    if name == "/dev/zero linked as a .jsonl":
        (tmp_path / "r").mkdir()
        os.symlink("/dev/zero", tmp_path / "r" / "zero.jsonl")
    start = time.perf_counter()
    code, stderr = at(files, *args)
    assert time.perf_counter() - start < 60  # no hang (a FIFO read would block forever)
    assert stderr == expected.format(tmp=tmp_path)
    assert code == (0 if expected.startswith("Warning") else 2)


def test_bf16_on_a_cpu_without_it_is_refused_by_validate_as_by_run(at):
    if cpu_bf16_lstm():
        pytest.skip("this CPU runs a bf16 LSTM")
    code, stderr = at({"s.yaml": BASE.replace("epochs: 1,", "epochs: 1, amp: bf16,")}, "validate", "s.yaml")
    assert (code, stderr) == (2, "Error: s.yaml: train.amp: bf16 on this CPU: oneDNN has no bf16 LSTM here (the CPU "
                                 "lacks avx512_bf16 and AMX); use none, or run on a CPU or GPU with bf16\n")


@pytest.mark.parametrize("command", ["validate", "verify", "run"])
def test_a_model_that_cannot_fit_is_refused_before_anything_runs(at, command):
    code, stderr = at({"s.yaml": BASE.replace("hidden_size: 12", "hidden_size: 1000000")}, command, "s.yaml")
    assert code == 2
    assert stderr.startswith("Error: s.yaml: model: needs 59,605.2 GiB for the weights, gradients and Adam's two "
                             "moments alone, and this cpu has ")
    assert stderr.endswith(" GiB; make the model smaller\n") and stderr.count("\n") == 1


def test_a_byte_order_mark_is_not_part_of_the_first_column(at):
    rows = "".join(f"ab{i},{i % 2}\n" for i in range(40))
    code, _ = at({"d.csv": "\ufefftext,label\n" + rows}, "lengths", "d.csv")
    assert code == 0


@pytest.mark.parametrize("args, message", [
    (["lengths", "s.yaml", "--seed", "-5"],
     "Invalid value for '--seed': -5 is not in the range 0<=x<=4294967295; see lstmbench lengths --help"),
    (["verify", "s.yaml", "--batches", "0"],
     "Invalid value for '--batches': 0 is not in the range x>=1; see lstmbench verify --help"),
    (["run", "--bogus", "s.yaml"], "No such option '--bogus'. Did you mean '--out'? See lstmbench run --help"),
    (["run"], "Missing argument 'SUITE_FILE'; see lstmbench run --help"),
    (["frobnicate"], "No such command 'frobnicate'; see lstmbench --help"),
])
def test_out_of_range_options_are_usage_errors(at, args, message):
    code, stderr = at({"s.yaml": BASE}, *args)
    assert code == 2 and stderr == f"Error: {message}\n"  # one line, like every other error


# ----------------------------------------------------------------------------- hostile YAML, generated
def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def bomb(levels: int, width: int) -> str:
    names = [f"n{i}" for i in range(levels)]
    first = f"&{names[0]} [" + ", ".join(["x"] * width) + "]"
    rest = [f"&{c} [" + ", ".join([f"*{p}"] * width) + "]" for p, c in zip(names, names[1:])]
    return "[" + ", ".join([first] + rest) + "]"


VALUES = st.one_of(
    st.builds(bomb, st.integers(1, 12), st.integers(1, 12)),
    st.builds(nest, st.integers(1, 2000)),
    st.integers(0, 6000).map(lambda n: "9" * max(n, 1)),
    st.integers(0, 600).map(lambda n: "-0x" + "f" * max(n, 1)),
    st.sampled_from([".nan", ".inf", "-.inf", "1e400", "-0.0", "1e-400", "0o777", "0b1", "~", "!!binary aGk=",
                     "!!python/object:os.system ls", "*undefined", "&a x", "!!set {a, b}", "!!timestamp 2001-12-14"]),
)
KEYS = st.sampled_from(["description", "seeds", "threads", "sweep", "ideal", "device", "train", "model", "nope"])


@st.composite
def hostile_suites(draw):
    """BASE with 1-3 keys added; (text, whether it must be refused)."""
    text, keys, refuse = BASE, [], False
    for _ in range(draw(st.integers(1, 3))):
        key, value = draw(KEYS), draw(VALUES)
        text += f"{key}: {value}\n"
        refuse |= key in keys or f"\n{key}:" in "\n" + BASE  # a key given twice: refused, whatever the value
        refuse |= value.count("[") > 31 or sum(c.isdigit() for c in value) > 20 and "*" not in value
        refuse |= "*n" in value and value.count(",") + 1 > 10  # any bomb of more than one level of ten
        keys.append(key)
    return text, refuse


@given(hostile_suites())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.slow
def test_hostile_yaml_is_one_line_exit_2_within_bounds(tmp_path_factory, case):
    """Aliases, depth, huge integers, duplicate keys and special values: exit 0 (a valid suite) or exit 2 with
    one short `Error:` line, within 10 s and 64 MiB; always exit 2 where the YAML itself must be refused."""
    text, refuse = case
    path = tmp_path_factory.mktemp("y") / "s.yaml"
    path.write_text(text)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        r = CliRunner().invoke(main, ["validate", str(path)])
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.exit_code in (0, 2) and (r.exception is None or isinstance(r.exception, SystemExit)), r.exception
    assert r.exit_code == 2 or not refuse, text[-200:]
    if r.exit_code == 2:
        assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1
    assert len(r.stderr) <= len("Error: \n") + MAX_MESSAGE
    assert seconds < 10 and peak < 64 * 2**20, (seconds, peak)


def test_an_allocation_failure_inside_verify_is_one_sentence(at, monkeypatch):
    """A model small enough to pass the memory floor can still fail to allocate its activations."""
    def fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 68719476736 bytes.")

    monkeypatch.setattr("lstmbench.measure.verify.SuiteChecks.generic", fails)
    code, stderr = at({"s.yaml": BASE}, "verify", "s.yaml")
    assert (code, stderr) == (2, "Error: verify: out of memory: [enforce fail at alloc_cpu.cpp:117] data. "
                                 "DefaultCPUAllocator: not enough memory: you tried to allocate 68719476736 bytes.\n")
