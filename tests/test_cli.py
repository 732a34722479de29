"""The CLI: exit codes and the exact text users read."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from lstmbench.cli import main
from tests.conftest import write_suite


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_validate_describes_the_suite(tiny_file):
    r = invoke("validate", tiny_file)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{tiny_file}: ok: suite 'tiny', 5 strategies + the ideal x 2 seeds = 12 runs on cpu "
                              "(configuration ")
    assert lines[1] == ("  naive [preset]: batching random, padding global, readout last; "
                        "changes the computation: reads the output after the padding")
    assert lines[2] == ("  truncate [preset]: batching random, padding truncate (max_len 6), readout mask; "
                        "changes the computation: truncates to 6 tokens")
    assert lines[3] == "  mask [preset]: batching random, padding batch, readout mask; exact: equals per-sequence processing"


@pytest.mark.parametrize("cmd", ["validate", "run"])
def test_bad_suite_is_one_error_line_and_exit_2(tmp_path, tiny_dict, cmd):
    tiny_dict["train"]["batch_size"] = 0
    path = write_suite(tmp_path, tiny_dict)
    r = invoke(cmd, path, "--out", tmp_path / "results") if cmd == "run" else invoke(cmd, path)
    assert r.exit_code == 2
    assert r.stderr == f"Error: {path}: train.batch_size: must be > 0, got 0\n"
    assert not (tmp_path / "results").exists()


def test_missing_suite_file(tmp_path):
    r = invoke("validate", tmp_path / "none.yaml")
    assert (r.exit_code, r.stderr) == (2, f"Error: {tmp_path / 'none.yaml'}: no such file\n")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_gpu_fails_before_any_run(tiny_file, tmp_path):
    r = invoke("run", tiny_file, "--device", "cuda", "--out", tmp_path / "results")
    assert r.exit_code == 2
    assert r.stderr == ("Error: device cuda was asked for, but torch sees no CUDA GPU "
                        "(torch.cuda.is_available() is False)\n")
    assert not (tmp_path / "results").exists()


def test_strategies_lists_presets_and_choices():
    r = invoke("strategies")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[:5] == [
        "naive        pad every sequence to the dataset's max length; read the output at the last padded step",
        "truncate     cut sequences to max_len, pad to the batch's max, read at each sequence's true end",
        "mask         pad to the batch's max length; read the output at each sequence's true end",
        "pack         pad to the batch's max; run the LSTM on pack_padded_sequence",
        "bucket       batches of similar lengths (batch order shuffled); pad to the batch's max; pack",
    ]
    assert "  readout:   pack         a PackedSequence: the LSTM never sees padding" in lines
    assert "  framework: torch        lstmbench's PyTorch loop (the default)" in lines
    assert any(line.startswith("sorted_pack  ") for line in lines)


@pytest.mark.slow
def test_run_then_report_end_to_end(tiny_file, tmp_path):
    """Real child processes (spawn) for two runs, then the report's files."""
    out = tmp_path / "results"
    r = invoke("run", tiny_file, "--out", out, "--set", "seeds=[0]", "--set", "strategies=[naive, mask]")
    assert r.exit_code == 0, r.output
    (rows_file,) = (out / "tiny").glob("*.jsonl")
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert sorted((x["position"], x["strategy"], x["seed"], x["status"]) for x in rows) == [
        (0, "naive", 0, "ok"), (1, "mask", 0, "ok"), (2, "ideal", 0, "ok")]  # seed 0's shuffled order
    assert [x["strategy"] for x in rows] == ["naive", "mask", "ideal"]  # run and stored in that order
    assert rows[0]["init_checksum"] == rows[1]["init_checksum"] == rows[2]["init_checksum"]
    assert rows[1]["efficiency"] == rows[1]["tokens_per_s"] / rows[1]["reference_tokens_per_s"]
    assert "| mask " in r.stdout and f"3 rows appended to {rows_file}." in r.stdout
    assert (f"Report of this suite's runs (tables, plots, HTML): lstmbench report {rows_file.parent}\n"
            f"Recommendation: lstmbench recommend {rows_file.parent}\n") in r.stdout  # names its own folder
    assert r.stderr.startswith("tiny: 2 strategies + the ideal x 1 seeds = 3 runs on cpu; rows go to ")

    r = invoke("report", out)
    assert r.exit_code == 0, r.output
    report_dir = out / "tiny" / "report"
    assert sorted(p.name for p in report_dir.iterdir()) == [
        "accuracy.png", "accuracy_by_length.png", "decision.png", "index.html", "lengths.png", "memory.png", "summary.csv",
        "summary.md", "throughput.png"]
    assert r.stdout.startswith("# lstmbench report: tiny\n")
    assert f"Wrote 9 files to {report_dir}" in r.stdout

    r = invoke("report", rows_file, "--out", tmp_path / "elsewhere")
    assert r.exit_code == 0 and (tmp_path / "elsewhere" / "tiny" / "summary.md").exists()


def test_failed_runs_are_rows_and_exit_1(tiny_file, tmp_path, monkeypatch):
    from lstmbench.measure.loop import SEAMS

    real_loss = SEAMS.loss
    monkeypatch.setattr(SEAMS, "loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    out = tmp_path / "results"
    r = invoke("run", tiny_file, "--inline", "--out", out, "--set", "seeds=[0]", "--set", "strategies=[mask]",
               "--set", "ideal=false")
    assert r.exit_code == 1
    assert r.stderr.endswith("Error: 1 of 1 runs failed; their rows carry the status and error.\n")
    (rows_file,) = (out / "tiny").glob("*.jsonl")
    (row,) = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert row["status"] == "diverged" and row["error"].startswith("training loss became nan at step ")


def test_report_without_results(tmp_path):
    r = invoke("report", tmp_path)
    assert (r.exit_code, r.stderr) == (2, f"Error: no result files (*.jsonl) under {tmp_path}\n")


def test_run_children_do_not_import_the_reporting_stack():
    """Each run's spawned child re-imports the CLI module: pandas, matplotlib and scipy must not come with it,
    or every run's peak memory would carry them."""
    import subprocess
    import sys

    code = ("import sys, lstmbench.cli, lstmbench.run.worker, lstmbench.measure.train; "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("shard", ["0/4", "5/4", "2", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_one_line(tiny_file, tmp_path, shard):
    r = invoke("run", tiny_file, "--out", tmp_path, "--shard", shard)
    assert r.exit_code == 2
    assert r.output == f"Error: --shard: expected K/N with 1 <= K <= N (e.g. 2/4), got {shard!r}\n"
    assert not (tmp_path / "tiny").exists()


def test_inline_cannot_start_a_ddp_job(tiny_file, tmp_path):
    r = invoke("run", tiny_file, "--out", tmp_path, "--inline", "--nproc", "2")
    assert r.exit_code == 2
    assert r.output == (f"Error: {tiny_file}: launch.nproc: is 2: a DDP job needs its own processes, which "
                        "--inline does not start\n")


@pytest.mark.slow
def test_shards_run_their_slice_and_the_report_merges_them(tiny_file, tmp_path):
    """Two shards of one suite, as two tasks of a SLURM array would: together every run once, one section."""
    for k in (1, 2):
        r = invoke("run", tiny_file, "--out", tmp_path, "--inline", "--shard", f"{k}/2", "--set", "seeds=[0]",
                   "--set", "train.epochs=1")
        assert r.exit_code == 0, r.output
    import json

    rows = [json.loads(line) for f in (tmp_path / "tiny").glob("*.jsonl") for line in f.read_text().splitlines()]
    strategies = sorted(r["strategy"] for r in rows if r["strategy"] != "ideal")
    assert strategies == ["bucket", "mask", "naive", "pack", "truncate"]
    assert sorted(r["shard"] for r in rows) == ["1/2"] * 4 + ["2/2"] * 3  # each shard ran its own ideal
    assert all((r["efficiency"] is None) == (r["strategy"] == "ideal") for r in rows)  # each run its own reference
    r = invoke("report", tmp_path / "tiny")
    assert r.exit_code == 0 and r.output.count("## tiny on cpu") == 1
    assert "| ideal " in r.output and "|      2 |" in r.output  # the ideal's two runs, one per shard


def test_report_and_recommend_without_results_say_where_results_come_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/ here
    for command in ("report", "recommend"):
        r = CliRunner().invoke(main, [command])
        assert r.exit_code == 2
        assert r.output == ("Error: results: no such folder: run a suite first (lstmbench run suites/packing.yaml), "
                            "or name result files or folders (the committed reference results: reference/)\n")


def test_lstmbench_alone_prints_its_help():
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 2 and r.output.startswith("Usage: lstmbench [OPTIONS] COMMAND [ARGS]...")
    assert "Error" not in r.output
