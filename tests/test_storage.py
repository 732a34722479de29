"""Storage: append-only JSONL per invocation; readers skip a torn line and refuse foreign or newer files."""
from __future__ import annotations

import json

import pytest

from lstmbench.errors import ResultsError
from lstmbench.measure.record import SCHEMA_VERSION
from lstmbench.results import storage
from tests import factories


def row(**kw):
    return factories.row(suite="s", **kw)


def test_append_and_load_round_trip(tmp_path):
    f = storage.new_run_file(tmp_path, "s")
    assert f.path.parent == tmp_path / "s" and f.path.suffix == ".jsonl"
    f.append(row(seed=0, tokens_per_s=1.5))
    f.append(row(seed=1, tokens_per_s=2.5))
    lines = f.path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["seed"] == 1
    loaded = storage.load_rows([tmp_path])
    assert loaded.rows["tokens_per_s"].tolist() == [1.5, 2.5] and loaded.skipped == []
    assert set(loaded.rows["source_file"]) == {str(f.path)}


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    f = storage.new_run_file(tmp_path, "s")
    f.append(row())
    with open(f.path, "a") as fh:
        fh.write('{"schema_version": 1, "sui')
    loaded = storage.load_rows([f.path])
    assert len(loaded.rows) == 1
    assert loaded.skipped == [f"{f.path}:2: not a complete JSON line (a run interrupted while writing?); skipped"]


def test_report_folders_are_not_read_as_results(tmp_path):
    storage.new_run_file(tmp_path, "s").append(row())
    storage.write_files(storage.report_dir(tmp_path, "s"), {"x.jsonl": "not results\n", "summary.md": "# hi"})
    assert len(storage.load_rows([tmp_path]).rows) == 1


@pytest.mark.parametrize("content, message", [
    ('{"hello": 1}\n', "no result rows in 1 file(s) under {p} (1 line(s) skipped; the first: {p}:1: not an "
                       "lstmbench result row (no schema_version or strategy); skipped)"),
    (json.dumps(row(schema_version=SCHEMA_VERSION + 1)) + "\n",
     f"{{p}}:1: schema_version {SCHEMA_VERSION + 1} is newer than this lstmbench reads ({SCHEMA_VERSION}); "
     "upgrade lstmbench"),
])
def test_foreign_and_newer_files_are_refused(tmp_path, content, message):
    p = tmp_path / "r.jsonl"
    p.write_text(content)
    with pytest.raises(ResultsError) as e:
        storage.load_rows([p])
    assert str(e.value) == message.format(p=p)


def test_missing_and_empty(tmp_path):
    with pytest.raises(ResultsError, match="nope: no such file or folder"):
        storage.load_rows([tmp_path / "nope"])
    with pytest.raises(ResultsError, match=r"no result files \(\*\.jsonl\) under"):
        storage.load_rows([tmp_path])


def test_paths_stay_inside_the_results_folder(tmp_path):
    with pytest.raises(ResultsError, match="would write outside the results folder"):
        storage.new_run_file(tmp_path, "../escape")
