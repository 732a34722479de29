"""Recommend: the winner per section, why, the runner-up and its cost, what was ruled out, and when the results
cannot decide; the command's text, its Python snippet, and its errors."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from lstmbench.cli import main
from lstmbench.report.recommendation import fewest_seeds, python_snippet, recommend, recommend_rows
from lstmbench.results.rows import rows_frame
from tests.factories import BUCKET_MASK, CLEAR, config, run_rows, write_rows

ROOT = Path(__file__).resolve().parent.parent
TITLE = "tiny on cpu, vm1, cpu-x x2 (configuration h1; lstmbench 0.1.0 at abc, torch 2.x)"


def one(rows: list[dict]):
    (rec,) = recommend_rows(rows_frame(rows))
    return rec


def test_a_clear_winner_the_fastest_exact_strategy_to_the_target():
    rec = one(CLEAR)
    assert (rec.suite, rec.title, rec.winner, rec.undecided) == ("tiny", TITLE, "bucket-mask", None)
    assert rec.why == ("fastest to 0.85 held-out accuracy: 11.0 s median over 3 runs (3/3 reached), exact, accuracy "
                       "0.870, not significantly below the best exact strategy pack: -0.010, p=0.55 (n.s.; ~14 seeds "
                       "would decide)")
    assert rec.runner_up == "mask"
    assert rec.runner_up_cost == ("mask: 19.0 s (173%) slower to 0.85 (30.0 vs 11.0 s median); accuracy 0.870 vs "
                                  "0.870")
    assert [name for name, _ in rec.ruled_out] == ["naive"]  # the ideal is no candidate
    assert rec.ruled_out == [("naive", "accuracy lost: below: -0.330, p=0.018; target 0/3 vs 3/3; never reached 0.85 "
                                       "within the 45 s cap (0/3 runs)")]
    assert rec.strategy == BUCKET_MASK and rec.batch_size == 16


def test_a_fast_strategy_that_lost_accuracy_is_ruled_out():
    """naive 20x faster but 0.45 below on each of 6 seeds: the paired test decides (3 strategies, 6 seeds)."""
    cfg = config(["naive", "mask", "pack"], seeds=6)
    rec = one(run_rows(cfg, {
        "naive": {"tps": [6000.0, 6100.0, 5900.0, 6000.0, 6050.0, 5950.0], "acc": [0.5, 0.52, 0.48, 0.5, 0.51, 0.49]},
        "mask": {"tps": [300.0, 310.0, 290.0, 305.0, 295.0, 300.0], "acc": [0.95, 0.96, 0.94, 0.95, 0.97, 0.93]},
        "pack": {"tps": [100.0, 105.0, 95.0, 100.0, 98.0, 102.0], "acc": [0.95, 0.95, 0.95, 0.96, 0.95, 0.94]},
    }, seeds=6))
    assert rec.ruled_out == [("naive", "accuracy lost: below: -0.450, p=0.0025")]
    assert rec.winner == "mask"
    assert rec.why == ("highest throughput: 300 tokens/s median over 6 runs, exact, accuracy 0.950, the best exact "
                       "strategy's")
    assert rec.runner_up_cost == "pack: 67% fewer tokens/s (100 vs 300 median); accuracy 0.950 vs 0.950"


def test_a_strategy_that_changes_the_computation_may_win_when_not_below():
    cfg = config(["truncate", "mask"], seeds=3)
    rec = one(run_rows(cfg, {"truncate": {"tps": [900.0, 950.0, 850.0], "acc": [0.95, 0.94, 0.96]},
                             "mask": {"tps": [300.0, 310.0, 290.0], "acc": [0.95, 0.95, 0.95]}}, seeds=3))
    assert rec.winner == "truncate" and rec.ruled_out == []
    assert rec.why == ("highest throughput: 900 tokens/s median over 3 runs, changes the computation: truncates to "
                       "6 tokens, accuracy 0.950, not significantly below the best exact strategy mask: +0.000 (no "
                       "shortfall)")


def test_one_seed_cannot_decide_and_says_how_many_seeds_would():
    cfg = config(["naive", "mask", "pack"], seeds=1, target=0.9)
    rec = one(run_rows(cfg, {"naive": {"tps": [600.0], "acc": [0.91], "ttt": [1.0]},
                             "mask": {"tps": [300.0], "acc": [0.95], "ttt": [2.0]},
                             "pack": {"tps": [100.0], "acc": [0.95], "ttt": [6.0]}}, seeds=1))
    assert rec.winner is None and rec.why == "" and rec.runner_up is None
    assert rec.undecided == (
        "the results cannot decide: the strategies have 1 seed in common, and the paired accuracy test needs at "
        "least 2 to run (4 to find a shortfall among 3 strategies); run at least 4 seeds (--set seeds=[0,1,2,3]); "
        "the fastest so far, its accuracy unchecked: naive (1.00 s median to 0.9 held-out accuracy over 1 run "
        "(1/1 reached))")
    assert python_snippet(rec).startswith("# lstmbench cannot recommend a strategy for suite 'tiny' (cpu): the "
                                          "results cannot decide")
    assert fewest_seeds(2, 2) == 7 and fewest_seeds(7, 2) == 3  # 2! ^ -6 < 0.025; 7! ^ -1 already is


def test_no_exact_strategy_cannot_decide():
    cfg = config(["naive", "truncate"], seeds=3)
    rec = one(run_rows(cfg, {"naive": {"tps": [600.0] * 3, "acc": [0.9] * 3},
                             "truncate": {"tps": [900.0] * 3, "acc": [0.9] * 3}}, seeds=3))
    assert rec.winner is None
    assert rec.undecided == (
        "the results cannot decide: no exact strategy (mask, pack, bucket, ...) has an ok run, so nothing checks the "
        "accuracy of naive, truncate against the exact computation; add one to the suite; the fastest so far, its "
        "accuracy unchecked: truncate (900 tokens/s median over 3 runs)")


def test_strategies_whose_runs_all_failed_are_ruled_out_with_their_reason():
    cfg = config(["mask", "pack", BUCKET_MASK], seeds=3, target=0.9)
    rec = one(run_rows(cfg, {
        "mask": {"tps": [300.0, 310.0, 290.0], "acc": [0.95, 0.95, 0.96], "ttt": [2.0, 2.1, 2.2]},
        "pack": {"status": "oom", "error": "out of memory at step 3 on a batch of shape (16, 40): could not "
                                           "allocate 512 bytes"},
        "bucket-mask": {"status": "diverged", "error": "training loss became nan at step 7"},
    }, seeds=3))
    assert rec.ruled_out == [
        ("pack", "all 3 runs failed: out of memory (3/3): out of memory at step 3 on a batch of shape (16, 40): "
                 "could not allocate 512 bytes"),
        ("bucket-mask", "all 3 runs failed: diverged (the training loss became NaN or infinite) (3/3): training "
                        "loss became nan at step 7"),
    ]
    assert rec.winner == "mask" and rec.runner_up is None and rec.runner_up_cost == ""
    assert rec.why == ("the only strategy left: 2.10 s median to 0.9 held-out accuracy over 3 runs (3/3 "
                       "reached), exact, accuracy 0.953, the best exact strategy's")


def test_the_command_prints_each_section_and_exits_0(tmp_path: Path):
    folder = write_rows(tmp_path / "results", CLEAR)
    result = CliRunner().invoke(main, ["recommend", str(folder)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:4] == [
        TITLE,
        "  Recommended: bucket-mask",
        "  Why: Fastest to 0.85 held-out accuracy: 11.0 s median over 3 runs (3/3 reached), exact, accuracy 0.870, "
        "not significantly below the best exact strategy pack: -0.010, p=0.55 (n.s.; ~14 seeds would decide).",
        "  Runner-up: mask: 19.0 s (173%) slower to 0.85 (30.0 vs 11.0 s median); accuracy 0.870 vs 0.870.",
    ]
    assert lines[4:] == ["  Ruled out:", "    - naive: accuracy lost: below: -0.330, p=0.018; target 0/3 vs 3/3; never "
                                         "reached 0.85 within the 45 s cap (0/3 runs)"]
    assert len(recommend([folder]).recommendations) == 1


def test_python_format_compiles_and_sets_up_the_winner(tmp_path: Path):
    folder = write_rows(tmp_path / "results", CLEAR)
    result = CliRunner().invoke(main, ["recommend", str(folder), "--format", "python"])
    assert result.exit_code == 0, result.output
    compile(result.output, "<recommend>", "exec")
    assert result.output.splitlines()[0].startswith("# lstmbench recommends bucket-mask for suite 'tiny' (cpu): "
                                                    "fastest to 0.85")
    assert ('strategy = {"name": "bucket-mask", "batching": "bucket", "padding": "batch", "readout": "mask"}'
            in result.output)
    assert "batch_sampler(lengths, strategy, batch_size=16, seed=0)" in result.output
    assert "# readout mask: use last_step(output, batch.lengths)" in result.output


def test_python_snippets_for_pack_and_global_padding_compile():
    pack = one(run_rows(config(["naive", "pack"], seeds=3), {
        "naive": {"tps": [50.0] * 3, "acc": [0.9, 0.91, 0.92]}, "pack": {"tps": [60.0] * 3, "acc": [0.9] * 3}},
        seeds=3))
    code = python_snippet(pack)
    compile(code, "<pack>", "exec")
    assert "lstm(batch.packed(embed(batch.inputs)))" in code and "last_step" not in code
    pack.winner = "naive"
    pack.strategy = {"name": "naive", "batching": "random", "padding": "global", "readout": "last"}
    code = python_snippet(pack)
    compile(code, "<naive>", "exec")
    assert "collate_fn=collate(strategy, max_length=max(lengths))" in code and 'or the preset name "naive"' in code


def test_committed_rows_recommend_and_compile():
    found = recommend([Path(__file__).parent / "data" / "packing-first"])
    for rec in found.recommendations:
        assert rec.winner or rec.undecided
        compile(python_snippet(rec), "<packing>", "exec")


def test_a_missing_path_is_one_error_line_exit_2(tmp_path: Path):
    result = CliRunner().invoke(main, ["recommend", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"Error: {tmp_path / 'nowhere'}: no such file or folder"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    result = CliRunner().invoke(main, ["recommend", str(empty)])
    assert result.exit_code == 2 and result.output.startswith("Error: no result rows in 1 file(s)")


def test_a_target_no_strategy_reached_cannot_decide():
    cfg = config(["mask", "pack"], seeds=3, target=0.99, cap=45)
    rec = one(run_rows(cfg, {"mask": {"tps": [300.0] * 3, "acc": [0.9] * 3},
                             "pack": {"tps": [100.0] * 3, "acc": [0.9] * 3}}, seeds=3))
    assert rec.winner is None and rec.ruled_out == [("mask", "never reached 0.99 within the 45 s cap (0/3 runs)"),
                                                    ("pack", "never reached 0.99 within the 45 s cap (0/3 runs)")]
    assert rec.undecided == ("the results cannot decide: no strategy reached 0.99 within the 45 s cap; lower "
                             "train.target_accuracy or train longer")
    from lstmbench.cli.recommend import text_lines

    assert text_lines(rec)[1] == ("  Undecided: The results cannot decide: no strategy reached 0.99 within the 45 s "
                                  "cap; lower train.target_accuracy or train longer.")


def test_a_faster_strategy_that_changes_the_computation_with_an_undecided_shortfall_does_not_win():
    cfg = config([{"truncate": {"max_len": 6}}, "mask", BUCKET_MASK], target=0.85, cap=45)
    rows = run_rows(cfg, {
        "truncate": {"tps": [900.0, 950.0, 850.0], "acc": [0.86, 0.85, 0.87], "ttt": [5.0, 6.0, 7.0]},
        "mask": {"tps": [300.0, 310.0, 290.0], "acc": [0.90, 0.91, 0.89], "ttt": [30.0, 29.0, 31.0]},
        "bucket-mask": {"tps": [800.0, 850.0, 750.0], "acc": [0.90, 0.90, 0.90], "ttt": [10.0, 11.0, 12.0]},
    }, seeds=3)
    rec = one(rows)
    assert rec.winner == "bucket-mask"
    assert rec.why.startswith("fastest exact strategy to 0.85 held-out accuracy: 11.0 s median over 3 runs")
    assert rec.runner_up == "truncate"
    assert rec.runner_up_cost.startswith("truncate: 5.00 s (45%) faster to 0.85 (6.00 vs 11.0 s median); accuracy "
                                         "0.860 vs 0.900. It is faster, but changes the computation: truncates to 6 "
                                         "tokens, and its accuracy shortfall against the best exact strategy is not "
                                         "decided by these seeds: -0.040, p=")


HOSTILE = "x\nimport os; os.system('touch PWNED') #"


def statements(code: str) -> list[str]:
    return [type(s).__name__ for s in ast.parse(code).body]


def test_text_from_rows_never_becomes_a_statement_of_the_snippet():
    """Names, the why, options and the batch size come from a shared results folder: whatever they hold, the
    snippet has the statements of a benign one, the names quoted in its literal."""
    benign = statements(python_snippet(one(CLEAR)))
    for text in (HOSTILE, "a\rimport os", "a\u2028import os", "a\x0cimport os", 'a"\nimport os #', "a\x00b"):
        rec = one(CLEAR)
        rec.winner = rec.suite = rec.device = rec.why = text
        rec.strategy = {"name": text, "batching": "bucket", "padding": "batch", "readout": text,
                        text: [text, 1.5, True, None, float("nan")]}
        rec.batch_size = "16); import os #"  # type: ignore[assignment]
        code = python_snippet(rec)
        assert statements(code) == benign, code
        assert f'strategy = {{"name": {json.dumps(text)}, ' in code
        assert "batch_size=32, seed=0)" in code
        rec.winner, rec.undecided = None, text
        assert statements(python_snippet(rec)) == []


def test_a_row_whose_strategy_is_not_a_name_is_skipped_with_a_warning(tmp_path: Path):
    folder = write_rows(tmp_path / "results", CLEAR + [{**CLEAR[0], "strategy": HOSTILE}])
    result = CliRunner().invoke(main, ["recommend", str(folder), "--format", "python"])
    assert result.exit_code == 0, result.output
    assert statements(result.stdout) == statements(python_snippet(one(CLEAR)))
    assert "PWNED" not in result.stdout
    assert result.stderr.splitlines() == [
        f"Warning: {folder / 'tiny' / '20261128T000000Z-vm1-1.jsonl'}:16: strategy is \"x\\nimport os; "
        "os.system('touch PWNED') #\", not a name (letters, digits, '_', '.', '+', '-', 100 at most); skipped"]


def test_when_every_run_failed_the_sentence_points_to_the_errors_not_to_the_suite(tmp_path: Path):
    rows = run_rows(config(["naive", "mask", BUCKET_MASK]), {"naive": {"status": "error", "error": "boom"},
                                                            "mask": {"status": "oom", "error": "OOM"},
                                                            "bucket-mask": {"status": "error", "error": "x"}}, seeds=3)
    result = CliRunner().invoke(main, ["recommend", str(write_rows(tmp_path / "results", rows))])
    assert result.stdout.splitlines()[1] == (
        "  Undecided: The results cannot decide: every run of the exact strategies (mask, bucket-mask) failed, so "
        "nothing checks the accuracy against the exact computation; see why below, and run them again once that is "
        "fixed.")


def _decisions(rows: pd.DataFrame) -> list[tuple]:
    return [(r.winner, r.runner_up, [n for n, _ in r.ruled_out], r.undecided is None, r.too_busy)
            for r in recommend_rows(rows)]


def test_rewording_every_verdict_leaves_every_recommendation_unchanged(monkeypatch):
    """Decisions are data: the verdicts (what a strategy computes, its accuracy against the best, a note's level)
    are reworded to nonsense, and every recommendation (winner, runner-up, ruled out, undecided) stays."""
    from lstmbench.report import summary
    from lstmbench.report.verdicts import Verdict
    from lstmbench.results.storage import load_rows

    lost = config(["naive", "mask", "pack"], seeds=6)
    undecided = config([{"truncate": {"max_len": 6}}, "mask", BUCKET_MASK], target=0.85, cap=45)
    cases = [rows_frame(CLEAR), rows_frame(run_rows(lost, {
        "naive": {"tps": [6000.0] * 6, "acc": [0.5, 0.52, 0.48, 0.5, 0.51, 0.49]},
        "mask": {"tps": [300.0] * 6, "acc": [0.95, 0.96, 0.94, 0.95, 0.97, 0.93]},
        "pack": {"tps": [100.0] * 6, "acc": [0.95, 0.95, 0.95, 0.96, 0.95, 0.94]}}, seeds=6)),
        rows_frame(run_rows(undecided, {
            "truncate": {"tps": [900.0, 950.0, 850.0], "acc": [0.86, 0.85, 0.87], "ttt": [5.0, 6.0, 7.0]},
            "mask": {"tps": [300.0, 310.0, 290.0], "acc": [0.90, 0.91, 0.89], "ttt": [30.0, 29.0, 31.0]},
            "bucket-mask": {"tps": [800.0, 850.0, 750.0], "acc": [0.90] * 3, "ttt": [10.0, 11.0, 12.0]}}, seeds=3))]
    cases += [load_rows([folder]).rows for folder in sorted((ROOT / "reference").iterdir())
              if folder.is_dir() and folder.name != "baselines"]
    before = [_decisions(rows) for rows in cases]
    assert ("bucket-mask", "truncate", [], True, False) in before[2]  # the demotion is among them

    real_verdicts, real_computes = summary.accuracy_verdicts, summary.computes
    monkeypatch.setattr(summary, "accuracy_verdicts", lambda ok, s: {
        name: Verdict(v.kind, f"zz {i}") for i, (name, v) in enumerate(real_verdicts(ok, s).items())})

    def computes(note: str, ok: pd.DataFrame, reference: bool = False):
        what, _ = real_computes(note, ok, reference)
        return Verdict(what.kind, "zz"), "zz"

    monkeypatch.setattr(summary, "computes", computes)
    monkeypatch.setattr(summary, "_info", lambda text: Verdict(summary.Level.INFO, "zz"))
    monkeypatch.setattr(summary, "_warning", lambda text: Verdict(summary.Level.WARNING, "zz"))
    assert "zz" in recommend_rows(cases[0])[0].why  # the sentences did change
    assert [_decisions(rows) for rows in cases] == before
