"""export --format pytest-benchmark: ok rows become pytest-benchmark's JSON, which its own loader and
`pytest-benchmark compare` read back with the same names and statistics; bad input exits 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.errors import ResultsError
from lstmbench.measure.record import RunRecord
from lstmbench.results.export import stats, to_pytest_benchmark
from tests.factories import record

STEPS = 192


def row(strategy: str, seed: int, train_time_s: float, device: str = "cpu", status: str = "ok",
        suite: str = "packing") -> RunRecord:
    ok = status == "ok"
    return record(suite=suite, strategy=strategy, device=device, seed=seed, status=status,
                  error="" if ok else "CUDA out of memory", steps=STEPS if ok else 0,
                  train_time_s=train_time_s if ok else None,
                  tokens_per_s=80_000 / train_time_s if ok else None,
                  samples_per_s=2_000 / train_time_s if ok else None,
                  eval_accuracy=0.99 if ok else None, eval_accuracy_exact=0.995 if ok else None,
                  env={"git_commit": "0123abcd", "host": "box", "cpu": "Test CPU", "python": "3.11.9"})


# train_time_s per seed for each strategy
TIMES = {"mask": [2.0, 2.2, 1.9, 2.6, 2.1], "bucket": [0.8, 0.9, 0.85], "pack": [11.0]}


def write_set(folder: Path, extra: list[RunRecord] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.jsonl", "w") as f:
        for name, times in TIMES.items():
            for seed, t in enumerate(times):
                f.write(json.dumps(row(name, seed, t).to_dict()) + "\n")
        for r in extra:
            f.write(json.dumps(r.to_dict()) + "\n")
    return folder


def export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


@pytest.fixture
def exported(tmp_path) -> Path:
    results = write_set(tmp_path / "results", extra=[row("mask", 9, 0.0, status="oom")])
    out = tmp_path / "out" / "0001_export.json"
    out.parent.mkdir()
    r = export("--format", "pytest-benchmark", results, "-o", out)
    assert r.exit_code == 0, r.output
    assert "Wrote 3 benchmarks" in r.output
    return out


def test_pytest_benchmarks_loader_reads_the_export_back(exported):
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.storage.file import FileStorage

    storage = FileStorage(str(exported.parent), logger=Logger(Logger.QUIET))
    loaded = {b["name"]: b for b in storage.load_benchmarks(str(exported))}
    assert set(loaded) == {"packing/mask[cpu]", "packing/bucket[cpu]", "packing/pack[cpu]"}
    for name, times in TIMES.items():
        b = loaded[f"packing/{name}[cpu]"]
        per_step = [t / STEPS for t in times]  # the oom row is not a round
        assert b["group"] == "packing"
        assert b["params"] == {"strategy": name, "device": "cpu"}
        assert b["rounds"] == len(times)
        assert b["data"] == pytest.approx(per_step)
        assert b["min"] == pytest.approx(min(per_step))
        assert b["median"] == pytest.approx(sorted(per_step)[len(per_step) // 2])
        assert b["extra_info"]["tokens_per_s"] == pytest.approx([80_000 / t for t in times])
        assert b["extra_info"]["eval_accuracy"] == [0.99] * len(times)


def test_stats_equal_pytest_benchmarks_own(exported):
    from pytest_benchmark.stats import Stats

    document = json.loads(exported.read_text())
    assert document["version"] and document["datetime"]
    assert document["commit_info"]["id"] == "0123abcd"
    assert document["machine_info"]["node"] == "box"
    for bench in document["benchmarks"]:
        theirs = Stats()
        for value in bench["stats"]["data"]:
            theirs.update(value)
        _close(bench["stats"], theirs.as_dict())
        assert bench["stats"]["iterations"] == 1


def _close(mine: dict, theirs: dict) -> None:
    for key, value in theirs.items():
        assert mine[key] == (pytest.approx(value) if isinstance(value, float) else value), key


@pytest.mark.parametrize("data", [[1.0], [3.0, 1.0], [5.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 50.0],
                                  [0.1 * i for i in range(1, 12)], [2.0, 2.0, 2.0, 2.0, 2.0, 9.0, -4.0]])
def test_stats_match_pytest_benchmark_on_edge_cases(data):
    from pytest_benchmark.stats import Stats

    theirs = Stats()
    for value in data:
        theirs.update(value)
    _close(stats(data), theirs.as_dict())


def test_pytest_benchmark_compare_cli_reads_it(exported):
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "pytest-benchmark"
    if not exe.exists():
        pytest.skip("the pytest-benchmark command is not installed")
    r = subprocess.run([str(exe), "--storage", f"file://{exported.parent}", "compare", str(exported)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in TIMES:
        assert f"packing/{name}[cpu]" in r.stdout


def test_groups_by_suite_strategy_and_device(tmp_path):
    results = write_set(tmp_path / "r", extra=[row("mask", 0, 1.0, device="cuda"), row("mask", 0, 3.0, suite="other")])
    from lstmbench.results import storage

    document = to_pytest_benchmark(storage.load_rows([results]).rows)
    names = [b["name"] for b in document["benchmarks"]]
    assert sorted(names) == sorted(["other/mask[cpu]", "packing/bucket[cpu]", "packing/mask[cpu]",
                                    "packing/mask[cuda]", "packing/pack[cpu]"])


def test_bad_input_exits_2(tmp_path):
    out = tmp_path / "x.json"
    r = export("--format", "pytest-benchmark", tmp_path / "missing", "-o", out)
    assert r.exit_code == 2 and "no such file or folder" in r.output
    (tmp_path / "empty").mkdir()
    assert export(tmp_path / "empty", "-o", out).exit_code == 2

    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "rows.jsonl").write_text(json.dumps(row("mask", 0, 0.0, status="oom").to_dict()) + "\n")
    r = export(failed, "-o", out)
    assert r.exit_code == 2 and "no ok result rows" in r.output
    assert not out.exists()

    assert export("--format", "csv", failed, "-o", out).exit_code == 2
    assert export(failed).exit_code == 2  # -o is required
    ok = write_set(tmp_path / "ok")
    r = export(ok, "-o", tmp_path / "no" / "such" / "dir" / "x.json")
    assert r.exit_code == 2 and "cannot write" in r.output


def test_library_raises_results_error_on_rows_without_timings():
    import pandas as pd

    with pytest.raises(ResultsError, match="lack"):
        to_pytest_benchmark(pd.DataFrame([{"suite": "s", "strategy": "m", "status": "ok"}]))


def test_sweep_points_and_ddp_ranks_are_benchmarks_of_their_own(tmp_path):
    """The committed DDP suite: one process and two, per strategy: 16 benchmarks, never pooled."""
    from lstmbench.results.storage import load_rows

    root = Path(__file__).resolve().parents[1]
    document = to_pytest_benchmark(load_rows([root / "reference" / "ddp"]).rows)
    names = [b["name"] for b in document["benchmarks"]]
    assert len(names) == len(set(names)) == 16
    assert "ddp/bucket-balanced[cpu, launch.nproc=2, 2 ranks]" in names
    assert "ddp/bucket-balanced[cpu, launch.nproc=1]" in names
    assert all(len(b["stats"]["data"]) == 3 for b in document["benchmarks"])  # 3 seeds each


# github-action-benchmark's custom tools read a non-empty JSON array of its BenchmarkResult (v1.22.0,
# dist/src/extract.js, a zod schema: name, value, unit, range optional, extra optional); value a number
ACTION_FIELDS = {"name": str, "unit": str, "value": (int, float), "range": str, "extra": str}


def _load_action(path: Path) -> list[dict]:
    entries = json.loads(path.read_text())
    assert isinstance(entries, list) and entries
    for e in entries:
        assert {"name", "unit", "value"} <= e.keys() <= ACTION_FIELDS.keys()
        for key, value in e.items():
            assert isinstance(value, ACTION_FIELDS[key]) and not isinstance(value, bool), (key, value)
    assert len({e["name"] for e in entries}) == len(entries)  # one series per name
    return entries


def test_github_action_benchmark_bigger_is_median_tokens_per_s(tmp_path):
    results = write_set(tmp_path / "results", extra=[row("mask", 9, 0.0, status="oom")])
    out = tmp_path / "bench.json"
    r = export("--format", "github-action-benchmark", results, "-o", out)
    assert r.exit_code == 0, r.output
    assert r.output == f"Wrote 3 entries (github-action-benchmark) to {out}\n"
    entries = {e["name"]: e for e in _load_action(out)}
    mask = entries["packing/mask [cpu] tokens/s"]
    assert mask["unit"] == "tokens/s"
    assert mask["value"] == pytest.approx(80_000 / 2.1)  # the median of the five runs' tokens/s
    assert mask["range"] == "30,769-42,105 over 5 runs"
    assert mask["extra"].startswith("seeds: 0, 1, 2, 3, 4\nlstmbench commit: 0123abcd\n")
    assert entries["packing/pack [cpu] tokens/s"]["range"] == "7,273-7,273 over 1 runs"


def test_github_action_benchmark_smaller_has_time_to_target_only_where_reached(tmp_path):
    rows = []
    for seed, (bucket, naive) in enumerate([(3.0, None), (4.0, None), (5.0, 9.0)]):
        for name, t in (("bucket", bucket), ("naive", naive)):
            r = row(name, seed, 2.0).to_dict()
            r.update(target_accuracy=0.9, time_to_target_s=t, train_mem_bytes=3 * 2**20)
            rows.append(r)
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "smaller.json"
    assert export("--format", "github-action-benchmark-smaller", folder, "-o", out).exit_code == 0
    entries = {e["name"]: e for e in _load_action(out)}
    assert set(entries) == {"packing/bucket [cpu] time to target 0.9", "packing/bucket [cpu] train memory",
                            "packing/naive [cpu] train memory"}  # naive reached it once in 3: no median
    assert entries["packing/bucket [cpu] time to target 0.9"]["value"] == 4.0
    assert entries["packing/bucket [cpu] train memory"] == {
        "name": "packing/bucket [cpu] train memory", "unit": "MiB", "value": 3.0,
        "range": "3.0-3.0 over 3 runs", "extra": "seeds: 0, 1, 2\nlstmbench commit: 0123abcd\ncpu: Test CPU\n"
                                                 "configuration: abc"}


def test_pytest_benchmark_help_says_step_times_do_not_compare_across_strategies():
    r = CliRunner().invoke(main, ["export", "--help"])
    assert "A step's time is NOT\n    comparable across strategies" in r.output
