"""Reading results: `report`, `compare` and `export`. Storage reads and writes; these commands print."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from .base import EXIT_BAD_INPUT, EXIT_REGRESSION, EXIT_TOO_BUSY, default_results, main, translate_errors


@main.command(name="report")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", default=None, help="Write each suite's report to OUT/<suite>/ "
                                          "(default: the report/ folder beside the suite's results).")
@click.option("--pool", is_flag=True, help="Pool rows measured by different lstmbench commits or torch versions "
                                           "into one section (named POOLED, listing each); default: apart.")
@translate_errors
def report_cmd(paths: tuple[str, ...], out: str | None, pool: bool) -> None:
    """Tables, plots and a self-contained HTML page (index.html) from result files or folders (default:
    results/).

    Example: lstmbench report results/packing
    """
    from ..report import html, summary as report
    from ..results import storage

    loaded = storage.load_rows(default_results(paths))
    for warning in loaded.skipped:
        click.echo(f"Warning: {warning}", err=True)
    for suite_report in report.build_reports(loaded.rows, pool=pool):
        folder = Path(out) / suite_report.suite if out else _default_report_dir(loaded.rows, suite_report.suite)
        files = suite_report.files()
        files[html.INDEX] = html.suite_html(suite_report)  # after the report is built: report.py never imports html
        files.update(html.decision_pngs(suite_report))  # the decision chart, recommendation marked, as PNG too
        written = storage.write_files(folder, files)
        click.echo(suite_report.markdown())
        click.echo(f"Wrote {len(written)} files to {folder}\n")


def _default_report_dir(rows: Any, suite: str) -> Path:
    """The report/ folder beside the suite's rows; rows outside a folder named after their suite have no such
    place (a report written to ./results/ would land where nobody asked): --out must say where."""
    from ..errors import ResultsError
    from ..results import storage

    first = Path(rows.loc[rows["suite"] == suite, "source_file"].iloc[0])
    if first.parent.name != suite:
        raise ResultsError(f"{first} holds rows of suite {suite!r} outside a folder named {suite}: give --out "
                           "FOLDER to say where the report goes")
    return first.parent / storage.REPORT_DIR




@main.command(name="compare")
@click.argument("baseline", type=click.Path())
@click.argument("current", type=click.Path())
@click.option("--threshold", default=0.05, show_default=True, type=click.FloatRange(0, None),
              help="Smallest relative change that can count as a regression.")
@click.option("--alpha", default=0.02, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="False-alarm rate of a whole comparison of unchanged code (Benjamini-Hochberg over every gated "
                   "test).")
@translate_errors
def compare_cmd(baseline: str, current: str, threshold: float, alpha: float) -> None:
    """Compare two result sets (files or folders) per suite, strategy, device, hardware and torch version.

    Exit 0: no regression; 3: a regression (larger than --threshold and significant after correction, an
    accuracy fall beyond its tolerance, a strategy with no ok run now, or a target no longer reached);
    2: bad input, too few runs to test anything, or a group left without a verdict because its runs were
    measured while other processes took the CPU (they are left out, and named).

    Example: lstmbench compare reference/baselines/gpu results/gpu
    """
    from ..results import compare_results

    comparison = compare_results([baseline], [current], threshold=threshold, alpha=alpha)
    for warning in comparison.warnings():
        click.echo(f"Warning: {warning}", err=True)
    for sentence in comparison.lost:
        click.echo(sentence)
    for change in comparison.regressions:
        click.echo(change.sentence())
    if comparison.changes:
        click.echo(("\n" if comparison.has_regression else "") + comparison.table().to_markdown(index=False))
    for note in comparison.notes():
        click.echo(f"Note: {note}")
    groups = len({c.group for c in comparison.changes})
    n = len(comparison.regressions) + len(comparison.lost)
    click.echo(f"\nGate: {comparison.design()}")
    click.echo(f"{n} regression{'s' if n != 1 else ''} in {groups} group{'s' if groups != 1 else ''} compared.")
    if comparison.has_regression:
        sys.exit(EXIT_REGRESSION)
    if comparison.too_busy:
        click.echo(f"Error: no verdict for {len(comparison.too_busy)} group(s): too few runs were measured on a "
                   "quiet machine.", err=True)
        sys.exit(EXIT_TOO_BUSY)
    if comparison.incomparable and not comparison.tests:
        click.echo(f"Error: nothing compared in {len(comparison.incomparable)} group(s): the two sets' rows are of "
                   "schemas whose figures mean different things; measure the baseline again.", err=True)
        sys.exit(EXIT_BAD_INPUT)


def _pytest_benchmark(rows: Any, source: str) -> tuple[Any, str]:
    from ..results import to_pytest_benchmark
    document = to_pytest_benchmark(rows, source=source)
    return document, f"{len(document['benchmarks'])} benchmarks"


def _action(kind: str) -> Callable[[Any, str], tuple[Any, str]]:
    def export(rows: Any, source: str) -> tuple[Any, str]:
        from ..results import to_action_benchmark
        entries = to_action_benchmark(rows, kind, source=source)
        return entries, f"{len(entries)} entries"
    return export


EXPORT_FORMATS = {"pytest-benchmark": _pytest_benchmark, "github-action-benchmark": _action("bigger"),
                  "github-action-benchmark-smaller": _action("smaller")}


@main.command(name="export")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(list(EXPORT_FORMATS)), default="pytest-benchmark",
              show_default=True, help="Output format (see above).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The JSON file to write.")
@translate_errors
def export_cmd(results: tuple[str, ...], fmt: str, output: str) -> None:
    """Write the ok rows of RESULTS (files or folders) as JSON for another tool.

    \b
    github-action-benchmark: that action's customBiggerIsBetter array, one entry per
      suite/strategy/device: median tokens/s, with the runs' range (tool: customBiggerIsBetter).
    github-action-benchmark-smaller: its customSmallerIsBetter array: median time to the
      target accuracy (where most runs reached it) and training memory in MiB.
    pytest-benchmark: one benchmark per suite, strategy and device, one round per run, each
      round's value its mean step time (train_time_s / steps, seconds). A step's time is NOT
      comparable across strategies whose steps carry different numbers of tokens (bucketing,
      token budgets, truncation): compare tokens/s (in extra_info) across strategies, and a
      strategy's step time only with itself over time.

    Example: lstmbench export --format github-action-benchmark results/packing -o bench.json
    """
    import json

    from ..errors import ResultsError
    from ..results import storage

    loaded = storage.load_rows(results)
    for warning in loaded.skipped:
        click.echo(f"Warning: {warning}", err=True)
    document, count = EXPORT_FORMATS[fmt](loaded.rows, ", ".join(results))
    try:
        text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    except ValueError as e:
        raise ResultsError(f"{output}: cannot write: {e}") from None
    storage.write_file(Path(output), text)
    click.echo(f"Wrote {count} ({fmt}) to {output}")
