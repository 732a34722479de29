"""The report: aggregates over seeds, speed-up against naive, notes on weights and failures, files."""
from __future__ import annotations

import pandas as pd
import pytest

from lstmbench.report import summary as report
from lstmbench.results.rows import rows_frame
from lstmbench.suite.load import suite_from_dict
from tests import factories
from tests.conftest import TINY

CONFIG = suite_from_dict(TINY).to_dict()  # what rows carry: the resolved suite


def rows(**overrides) -> pd.DataFrame:
    base = []
    speeds = {"naive": [100.0, 110.0, 90.0], "mask": [300.0, 330.0, 270.0]}
    accs = {"naive": [0.5, 0.5, 0.5], "mask": [0.9, 1.0, 0.95]}
    for seed in range(3):
        for strategy in ("naive", "mask"):
            base.append(factories.row(**{
                "suite": "tiny", "suite_hash": "h1", "device": "cpu", "strategy": strategy, "seed": seed,
                "status": "ok", "error": "", "computation_note": "reads the output after the padding"
                if strategy == "naive" else "", "tokens_per_s": speeds[strategy][seed],
                "samples_per_s": 10.0, "pad_fraction": 0.5 if strategy == "mask" else 0.9,
                "data_time_fraction": 0.01, "train_time_s": 2.0, "peak_mem_bytes": 2**30,
                "baseline_rss_bytes": 2**29, "eval_accuracy": accs[strategy][seed],
                "eval_accuracy_exact": accs[strategy][seed], "init_checksum": f"c{seed}",
                "efficiency": {"naive": 0.2, "mask": 0.6}[strategy], "lstm_kernel": "onednn",
                "time_to_target_s": [None, 1.0, 2.0][seed] if strategy == "mask" else None,
                "curve": [[0.5, 8, 0.6], [1.0 + seed, 16, accs[strategy][seed]]],
                "train_length_histogram": [[2.0, 10.0, 30], [10.0, 40.0, 18]],
                "train_length_percentiles": [8.0, 30.0, 40.0],
                "verified": "differs as designed" if strategy == "naive" else "equivalent",
                "verify_loss_rel_error": 1e-7, "verify_grad_rel_error": 2e-7 * (seed + 1), "verify_tolerance": 1e-4,
                "verify_precision": "float32", "schema_version": 2, "config": CONFIG, "env": {"host": "vm1", "cpu": "cpu-x", "cpu_count": 2, "threads": 2, "device_name": "cpu", "torch": "2.x",
                                        "lstmbench": "0.1.0", "git_commit": "abc"},
            }))
    return rows_frame([{**row, **overrides} for row in base])


def older(frame: pd.DataFrame, *dropped: str) -> pd.DataFrame:
    """Rows of an older lstmbench, which lacked these keys, as the loader gives them (migrated)."""
    return rows_frame(frame.drop(columns=list(dropped)).to_dict("records"))


def test_summary_numbers():
    (suite_report,) = report.build_reports(rows())
    (section,) = suite_report.sections
    s = section.summary.set_index("strategy")
    assert s.loc["mask", "tokens_per_s"] == 300.0
    assert (s.loc["mask", "tokens_per_s_min"], s.loc["mask", "tokens_per_s_max"]) == (270.0, 330.0)
    assert s.loc["mask", "speedup_vs_naive"] == pytest.approx(3.0)
    assert s.loc["naive", "speedup_vs_naive"] == 1.0
    assert s.loc["mask", "eval_accuracy"] == pytest.approx(0.95)
    assert s.loc["mask", "eval_accuracy_sd"] == pytest.approx(0.05)
    assert s.loc["mask", "peak_mem_mib"] == 1024 and s.loc["mask", "run_mem_mib"] == 512
    assert list(s.index) == ["naive", "mask"]  # the suite's order
    table = section.table().set_index("strategy")
    # three runs support no 95% interval: the range, called the range (it covers the median 75% of the time)
    assert (s.loc["mask", "tokens_per_s_low"], s.loc["mask", "tokens_per_s_high"]) == (270.0, 330.0)
    assert s.loc["mask", "tokens_per_s_coverage"] == pytest.approx(0.75)
    assert table.loc["mask", "tokens/s (median [range or 95% CI])"] == "300 [range 270-330]"
    assert table.loc["mask", "vs naive"] == "3.00x"
    assert table.loc["mask", "accuracy, own path"] == "0.950 ± 0.050"
    # what each run's own check on its timed path found (the largest error over the runs)
    assert table.loc["naive", "computes"] == "reads the output after the padding (verified, float32 error 6e-07)"
    assert table.loc["mask", "computes"] == "exact (verified, float32 error 6e-07)"
    assert table.loc["mask", "peak MiB"] == "1,024 (+512)"
    assert section.notes[0].startswith("Initial weights identical across strategies for each of the 3 seed(s)")


def test_different_initial_weights_are_flagged():
    df = rows()
    df.loc[(df.strategy == "mask") & (df.seed == 1), "init_checksum"] = "other"
    (section,) = report.build_reports(df)[0].sections
    assert section.notes[0].startswith("WARNING: initial weights differ")


def test_failed_runs_are_counted_and_named():
    df = rows()
    df.loc[(df.strategy == "mask") & (df.seed == 2), ["status", "error"]] = ["oom", "out of memory"]
    (section,) = report.build_reports(df)[0].sections
    assert section.table().set_index("strategy").loc["mask", "runs"] == "2 (1 failed)"
    assert "FAILED: mask seed 2: oom: out of memory" in section.notes


def test_configurations_are_never_averaged_together():
    df = pd.concat([rows(), rows(suite_hash="h2")])
    (suite_report,) = report.build_reports(df)
    assert [s.suite_hash for s in suite_report.sections] == ["h1", "h2"]
    names = set(suite_report.files())
    assert {"summary.md", "summary.csv", "throughput-1-cpu-h1.png", "lengths-2-cpu-h2.png"} <= names


def test_machines_are_never_averaged_together():
    other = rows()
    other["env"] = [{**env, "host": "gpu-box", "cpu": "cpu-y"} for env in other["env"]]
    (suite_report,) = report.build_reports(pd.concat([rows(), other]))
    assert [s.machine for s in suite_report.sections] == ["cpu-x x2", "cpu-y x2"]
    assert suite_report.sections[1].title == ("tiny on cpu, gpu-box, cpu-y x2 (configuration h1; lstmbench 0.1.0 at "
                                              "abc, torch 2.x)")
    assert all(s.summary["runs_ok"].tolist() == [3, 3] for s in suite_report.sections)


def test_shards_from_hosts_of_the_same_hardware_are_merged():
    """`run --shard K/N` on the nodes of a cluster: one section, its hosts named."""
    first, second = rows(), rows()
    second["env"] = [{**env, "host": "node7"} for env in second["env"]]
    second["seed"] = second["seed"] + 10
    (suite_report,) = report.build_reports(pd.concat([first, second]))
    (section,) = suite_report.sections
    assert section.title == "tiny on cpu, node7, vm1, cpu-x x2 (configuration h1; lstmbench 0.1.0 at abc, torch 2.x)"
    assert section.summary["runs_ok"].tolist() == [6, 6]


def test_files_are_real_pngs_and_tables():
    files = report.build_reports(rows())[0].files()
    assert set(files) == {"summary.md", "summary.csv", "throughput.png", "memory.png", "accuracy.png", "lengths.png",
                          "time_to_accuracy.png"}
    assert all(files[n][:8] == b"\x89PNG\r\n\x1a\n" for n in files if n.endswith(".png"))
    assert "| mask " in files["summary.md"]
    csv = pd.read_csv(__import__("io").StringIO(files["summary.csv"]))
    assert list(csv["strategy"]) == ["naive", "mask"] and csv["speedup_vs_naive"].iloc[1] == pytest.approx(3.0)


def test_efficiency_time_to_target_and_ranking():
    (section,) = report.build_reports(rows())[0].sections
    s = section.summary.set_index("strategy")
    assert s.loc["mask", "efficiency"] == 0.6 and s.loc["naive", "efficiency"] == 0.2
    # MLPerf's median: the run that missed counts as never, so 2 of 3 runs give the slower of the two
    assert s.loc["mask", "time_to_target_s"] == 2.0 and s.loc["mask", "reached_target"] == 2
    assert s.loc["naive", "time_to_target_s"] == float("inf") and s.loc["naive", "reached_target"] == 0
    table = section.table().set_index("strategy")
    assert table.loc["mask", "vs unpadded (same batches)"] == "60% [range 60-60%]"
    assert table.loc["mask", "time to target s, warm / cold"] == "2.00 (2/3)"
    assert table.loc["naive", "time to target s, warm / cold"] == "-"
    assert table.loc["mask", "kernel"] == "onednn"
    assert report.ranking(section.summary, 0.9) == [
        "Time to accuracy 0.9 (median training seconds over the runs, one that never reached it counted as never; "
        "with evaluations: MLPerf's clock, first shapes and evaluations in):",
        "  1. mask: 2.00 s (2/3 runs)",
        "  2. naive: never reached (0/3 runs)",
    ]
    assert report.ranking(section.summary, 0.9, 60)[-1] == "  2. naive: never reached within the 60 s cap (0/3 runs)"
    assert report.ranking(section.summary, None) == []


def test_rows_of_an_older_version_without_new_keys_still_report():
    df = older(rows(), "efficiency", "lstm_kernel", "time_to_target_s", "curve")
    (section,) = report.build_reports(df)[0].sections
    table = section.table().set_index("strategy")
    assert table.loc["mask", "vs unpadded (same batches)"] == "-" and table.loc["mask", "kernel"] == "-"
    old = rows(schema_version=1)  # efficiency then divided by the seed's ideal run: another quantity, not shown
    assert report.build_reports(old)[0].sections[0].table()["vs unpadded (same batches)"].tolist() == ["-", "-"]


def test_a_section_whose_runs_all_failed():
    df = rows()
    df["status"], df["error"] = "oom", "out of memory"
    (section,) = report.build_reports(df)[0].sections
    assert section.notes[0] == "No run succeeded: nothing was measured."
    assert section.table().set_index("strategy").loc["mask", "runs"] == "0 (3 failed)"
    assert report.build_reports(df)[0].files()["summary.md"].count("FAILED: ") == 6


def test_rows_of_two_commits_are_two_sections_unless_pooled():
    """`make demo` after a clone: the committed rows (one commit) and the user's new ones (another) are never
    pooled silently; --pool pools them and says so, naming both."""
    other = rows()
    other["env"] = [{**env, "git_commit": "def4567-dirty", "torch": "2.y"} for env in other["env"]]
    (apart,) = report.build_reports(pd.concat([rows(), other]))
    assert [s.title for s in apart.sections] == [
        "tiny on cpu, vm1, cpu-x x2 (configuration h1; lstmbench 0.1.0 at abc, torch 2.x)",
        "tiny on cpu, vm1, cpu-x x2 (configuration h1; lstmbench 0.1.0 at def4567-dirty, torch 2.y)"]
    assert [s.summary["runs_ok"].tolist() for s in apart.sections] == [[3, 3], [3, 3]]
    (pooled,) = report.build_reports(pd.concat([rows(), other]), pool=True)
    (section,) = pooled.sections
    assert section.title == ("tiny on cpu, vm1, cpu-x x2 (configuration h1; POOLED: lstmbench 0.1.0 at abc, torch 2.x + "
                             "lstmbench 0.1.0 at def4567-dirty, torch 2.y)")
    assert section.summary["runs_ok"].tolist() == [6, 6]


def test_a_run_on_a_busy_machine_is_left_out_and_named():
    df = rows()
    df["env"] = [{**env, "other_cpu_share": 0.38 if i == 1 else 0.01, "load_before": 1.9, "load_after": 2.4}
                 for i, env in enumerate(df["env"])]
    (section,) = report.build_reports(df)[0].sections
    (note,) = [n for n in section.notes if n.startswith("LEFT OUT: ")]
    assert note == ("LEFT OUT: 1 of 6 runs, measured while other processes took the CPU (no figure here uses them; "
                    "`lstmbench run --resume` on a quiet machine measures them again): mask seed 0: other processes "
                    "used 38% of the CPU during the run (load 1.9 before, 2.4 after, 2 cores)")
    mask = section.summary.set_index("strategy").loc["mask"]
    assert (mask["runs_ok"], mask["runs_disturbed"], mask["runs_failed"]) == (2, 1, 0)
    assert set(section.disturbed["seed"]) == {0} and 0 not in set(section.rows.loc[section.rows["strategy"] == "mask",
                                                                                   "seed"])


def test_plots_show_each_run_as_a_dot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PathCollection

    from lstmbench.report import plots

    captured = []
    real = plots._dots

    def spy(ax, section, names, column, *args, **kwargs):
        real(ax, section, names, column, *args, **kwargs)
        captured.append((column, [len(c.get_offsets()) for c in ax.collections if type(c) is PathCollection]))

    import unittest.mock as mock

    with mock.patch.object(plots, "_dots", spy):
        report.build_reports(rows())[0].files()
    assert ("tokens_per_s", [3, 3]) in captured  # one dot per run of naive and of mask
    assert ("eval_accuracy_exact", [3, 3, 3, 3]) in captured  # beside the own-path dots of the same axes


def test_exact_comes_from_the_runs_checks_not_a_table():
    df = rows()
    df.loc[(df.strategy == "mask") & (df.seed == 1), ["verified", "verify_grad_rel_error"]] = ["MISMATCH", 3e-2]
    table = report.build_reports(df)[0].sections[0].table().set_index("strategy")
    assert table.loc["mask", "computes"] == "MISMATCH on the timed path (float32 error 3e-02 > tolerance 1e-04)"
    old = older(rows(), "verified")  # rows of an lstmbench that did not check in the run
    table = report.build_reports(old)[0].sections[0].table().set_index("strategy")
    assert table.loc["mask", "computes"] == "exact (not checked in the runs)"


def test_warm_and_cold_times_side_by_side():
    from lstmbench.report.summary import _warm_cold

    assert _warm_cold(1.5, 1.8) == "1.50 / 1.80"
    assert _warm_cold(1.5, float("nan")) == "1.50"  # a row before schema 3: steady state only
    assert _warm_cold(float("nan"), float("nan")) == "-"
