"""A results folder is untrusted input (shared by colleagues, downloaded from CI): rows that would write outside
it, links in it, and rows whose nested fields are malformed or out of their domain, each with its exact sentence."""
from __future__ import annotations

import ast
import copy
import json
import os
import tempfile
import traceback
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from lstmbench.cli import main
from lstmbench.report.summary import Section
from lstmbench.suite.files import safe_name
from tests.factories import CLEAR, FILE, write_rows
from tests.test_fuzz import VALUES


def bad_row(path: str, value) -> dict:
    """CLEAR's first row with the field at `path` (dots into nested objects) set to `value`."""
    row = copy.deepcopy(CLEAR[0])
    *parents, last = path.split(".")
    node = row
    for key in parents:
        node = node[key]
    node[last] = value
    return row


def test_row_fields_in_file_names_are_made_safe():
    tag = Section("tiny", "x/../../../../x", "../../cuda", pd.DataFrame()).file_tag(1, 2)
    assert tag == "-2-.._.._cuda-x_.._.._.._.._x-" + tag[-8:] and "/" not in tag
    assert Section("tiny", "abc", "cpu", pd.DataFrame()).file_tag(0, 2) == "-1-cpu-abc"
    assert Section("tiny", "abc", "cpu", pd.DataFrame()).file_tag(0, 1) == ""
    assert safe_name("NVIDIA H200") != safe_name("NVIDIA_H200")  # a hash tells apart what the slug merges


@pytest.mark.parametrize("path, value, sentence", [
    ("suite_hash", "x/../../../../x", 'suite_hash is "x/../../../../x", not a name (letters and digits, 100 at most)'),
    ("device", "cpu/../../x", "device is \"cpu/../../x\", not a name (letters, digits, spaces and '_.:()+-', 100 at most)"),
    ("config.train.batch_size", "sixteen", "config: train.batch_size: must be an integer, got 'sixteen' "
                                           "(the row's config is not a suite this lstmbench reads)"),
    ("config.train.target_accuracy", "x", "config: train.target_accuracy: must be a number, got 'x' "
                                          "(the row's config is not a suite this lstmbench reads)"),
    ("config.strategies", "mask", "config: strategies: must be a list, got a string "
                                  "(the row's config is not a suite this lstmbench reads)"),
    ("config.model", [1], "config: model: must be a mapping, got a list "
                          "(the row's config is not a suite this lstmbench reads)"),
    ("env.cpu", 5, "env.cpu is 5, not text"),
    ("env.git_commit", 7, "env.git_commit is 7, not text"),
    ("env.threads", [2], "env.threads is [2], not a single value"),
    ("window_tokens_per_s", [[1.0]], "window_tokens_per_s[0] is [1.0], not a non-negative number"),
    ("curve", [[1.0, 2]], "curve[0] is [1.0, 2], not [seconds, step, accuracy from 0 to 1]"),
    ("accuracy_by_length", [["a", 1, 2, 0.5]],
     'accuracy_by_length[0] is ["a", 1, 2, 0.5], not [shortest, longest, count, accuracy from 0 to 1]'),
    ("eval_accuracy", 7.5, "eval_accuracy is 7.5, outside 0 to 1"),
    ("eval_accuracy", -3, "eval_accuracy is -3, outside 0 to 1"),
    ("time_to_target_s", -5.0, "time_to_target_s is -5, negative (a count, a time or a rate is 0 or more)"),
    ("sweep", {"a\nb": 1}, 'sweep is {"a\\nb": 1}, not an object of key paths'),
])
def test_a_malformed_row_is_skipped_with_one_warning(tmp_path: Path, path: str, value, sentence: str):
    folder = write_rows(tmp_path / "results", CLEAR + [bad_row(path, value)])
    result = CliRunner().invoke(main, ["recommend", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"Warning: {folder / 'tiny' / FILE}:16: {sentence}; skipped"]
    assert result.stdout.startswith("tiny on cpu")


def test_a_report_folder_that_is_a_link_is_refused(tmp_path: Path):
    folder = write_rows(tmp_path / "results", CLEAR)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "tiny" / "report").symlink_to(elsewhere)
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: cannot write the report to {folder / 'tiny' / 'report'}: a symbolic link "
                             "(links in a results folder are not followed; remove it or give --out)\n")
    assert list(elsewhere.iterdir()) == []


def test_a_report_file_that_is_a_link_is_refused(tmp_path: Path):
    folder = write_rows(tmp_path / "results", CLEAR)
    (folder / "tiny" / "report").mkdir()
    victim = tmp_path / "victim.md"
    victim.write_text("mine\n")
    (folder / "tiny" / "report" / "summary.md").symlink_to(victim)
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: cannot write {folder / 'tiny' / 'report' / 'summary.md'}: a symbolic link "
                             "(links in a results folder are not followed)\n")
    assert victim.read_text() == "mine\n"


def test_rows_outside_their_suite_folder_need_out(tmp_path: Path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CLEAR))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", "elsewhere/x.jsonl"])
    assert result.exit_code == 2
    assert result.stderr == ("Error: elsewhere/x.jsonl holds rows of suite 'tiny' outside a folder named tiny: "
                             "give --out FOLDER to say where the report goes\n")
    assert sorted(os.listdir(tmp_path)) == ["elsewhere"]
    result = CliRunner().invoke(main, ["report", "elsewhere/x.jsonl", "--out", "out"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "tiny" / "summary.md").is_file()


def test_a_row_read_twice_counts_once(tmp_path: Path):
    folder = write_rows(tmp_path / "results", CLEAR)
    copy_of = folder / "tiny" / "copy.jsonl"
    copy_of.write_text((folder / "tiny" / FILE).read_text())
    result = CliRunner().invoke(main, ["recommend", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"Warning: {copy_of}: 15 row(s) read before, each counted once "
                             f"(line 1 is {folder / 'tiny' / FILE}:1, ...)\n")
    assert "11.0 s median over 3 runs" in result.stdout


def test_a_file_of_junk_is_named_by_its_first_lines_and_a_count(tmp_path: Path):
    folder = write_rows(tmp_path / "results", CLEAR)
    junk = folder / "tiny" / "junk.jsonl"
    junk.write_text("junk\n" * 100_000)
    result = CliRunner().invoke(main, ["recommend", str(folder)])
    assert result.exit_code == 0, result.output
    lines = [f"Warning: {junk}:{n}: not a complete JSON line (a run interrupted while writing?); skipped"
             for n in range(1, 6)]
    assert result.stderr.splitlines() == lines + [
        f"Warning: {junk}: 99995 more line(s) that are not result rows; skipped"]


def test_a_file_with_a_byte_order_mark_and_crlf_keeps_its_first_row(tmp_path: Path):
    folder = tmp_path / "results" / "tiny"
    folder.mkdir(parents=True)
    (folder / FILE).write_text("\ufeff" + "".join(json.dumps(r) + "\r\n" for r in CLEAR), encoding="utf-8")
    result = CliRunner().invoke(main, ["recommend", str(tmp_path / "results")])
    assert result.exit_code == 0 and result.stderr == "", result.output


# every readers' command on a folder of good rows plus one mutated row: one Warning or Error, never another exception
READERS = (["recommend"], ["recommend", "--format", "python"], ["compare", "{f}", "{f}"],
           ["export", "{f}", "-o", "{out}"])


def _row_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _row_paths(v, prefix + (k,))
    elif isinstance(node, list) and node and not isinstance(node[0], (int, float)):
        for i, v in enumerate(node[:2]):
            yield from _row_paths(v, prefix + (i,))


ROW_PATHS = [p for p in _row_paths({**CLEAR[0], "curve": [[1.0, 16, 0.5]], "accuracy_by_length": [[1, 4, 9, 0.5]],
                                     "window_tokens_per_s": [1.0, 2.0], "sweep": {"train.lr": 0.1}}) if p]


@st.composite
def mutated_rows(draw):
    rows = copy.deepcopy(CLEAR)
    row = rows[draw(st.integers(0, len(rows) - 1))]
    row.update(curve=[[1.0, 16, 0.5]], accuracy_by_length=[[1, 4, 9, 0.5]], window_tokens_per_s=[1.0, 2.0])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ROW_PATHS))
        node = row
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = draw(VALUES)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation changed the shape above this path
    return rows


@settings(max_examples=int(os.environ.get("ROW_FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=not os.environ.get("ROW_FUZZ_EXAMPLES"))
@given(rows=mutated_rows(), reader=st.sampled_from(READERS))
def test_no_row_makes_a_reader_fail_with_anything_but_one_sentence(rows, reader):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_rows(Path(tmp) / "results", rows)
        args = [a.format(f=folder, out=Path(tmp) / "out.json") for a in reader]
        result = CliRunner().invoke(main, args if len(args) > 1 and args[0] != "recommend" else args + [str(folder)])
        assert result.exception is None or isinstance(result.exception, SystemExit), "".join(
            traceback.format_exception(result.exception))
        assert result.exit_code in (0, 2, 3), result.output
        assert all(line.startswith(("Warning: ", "Error: ")) for line in result.stderr.splitlines()), result.stderr
        if reader[-1] == "python" and result.exit_code == 0:
            ast.parse(result.stdout)
        if reader[0] == "export" and result.exit_code == 0:
            json.loads((Path(tmp) / "out.json").read_text())


@settings(max_examples=int(os.environ.get("ROW_FUZZ_EXAMPLES", 12)), deadline=None,
          suppress_health_check=list(HealthCheck), derandomize=not os.environ.get("ROW_FUZZ_EXAMPLES"))
@given(rows=mutated_rows())
@pytest.mark.slow
def test_no_row_makes_the_report_fail_with_anything_but_one_sentence(rows):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_rows(Path(tmp) / "results", rows)
        result = CliRunner().invoke(main, ["report", str(folder)])
        assert result.exception is None or isinstance(result.exception, SystemExit), "".join(
            traceback.format_exception(result.exception))
        assert result.exit_code in (0, 2), result.output
        assert all(line.startswith(("Warning: ", "Error: ")) for line in result.stderr.splitlines()), result.stderr


@pytest.mark.slow
def test_a_sweep_over_mappings_is_reported_along_a_category_axis(tmp_path: Path):
    """A valid sweep of data.lengths over two mappings: its points are not numbers (nor comparable)."""
    rows = []
    for i, point in enumerate([{"dist": "fixed", "median": 8}, {"dist": "lognormal", "median": 8}]):
        rows += [{**copy.deepcopy(r), "sweep": {"data.lengths": point}, "suite_hash": f"h{i}"} for r in CLEAR]
    folder = write_rows(tmp_path / "results", rows)
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    report = folder / "tiny" / "report"
    assert (report / "crossover.png").stat().st_size > 10_000
    assert '"{\\"dist\\":\\"lognormal\\",\\"median\\":8}"' in (report / "index.html").read_text()  # a category


@pytest.mark.parametrize("data", [{"source": "text", "path": "d.csv"}, {"source": "text", "path": "/dev/zero"},
                                  {"lengths": {"dist": "empirical", "file": "/etc/passwd"}}])
def test_a_file_the_rows_config_names_is_never_opened(tmp_path: Path, monkeypatch, data):
    """The lengths histogram is drawn from what the runs recorded, never made again from a config: its paths are
    relative to a suite file the rows do not record, and come from someone else. These rows recorded none."""
    rows = []
    for r in CLEAR:
        config = copy.deepcopy(r["config"])
        config["data"].update(data)
        rows.append({**r, "config": config})
    folder = write_rows(tmp_path / "results", rows)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert not (folder / "tiny" / "report" / "lengths.png").exists()
    assert (folder / "tiny" / "report" / "throughput.png").exists()
