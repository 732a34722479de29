"""The command line: the only module that prints or exits. Library errors become `Error: ...`, exit 2.

The modules that pull in pandas, matplotlib and scipy (storage, report, compare) are imported inside the
commands: each run's child process re-imports this module (multiprocessing's spawn), and should hold no
more memory than training needs, so that its peak memory measures the run.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click
from tabulate import tabulate
from tqdm import tqdm

from . import __version__
from .data import check_data
from .errors import LstmbenchError
from .runner import parse_shard, plan_runs, run_suite, shard_of
from .strategies import CHOICE_HELP, DESCRIPTIONS, describe
from .suite import expand_sweep, load_suite

EXIT_BAD_INPUT = 2  # bad suite, bad result files, bad options (click's own usage errors are 2 too)
EXIT_RUNS_FAILED = 1  # the suite ran, but some runs failed; their rows say why


class CliError(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def translate_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LstmbenchError as e:
            raise CliError(" ".join(str(e).split("\n"))) from None  # one line, whatever a message quotes
    return wrapper


@click.group()
@click.version_option(__version__, prog_name="lstmbench")
def main() -> None:
    """Benchmark batching strategies for variable-length LSTM training."""


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Override the suite's device.")
@click.option("--out", default="results", show_default=True, help="Results folder.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a suite key, e.g. --set train.epochs=1 (repeatable).")
@click.option("--inline", is_flag=True, help="Run in this process instead of a fresh one per run "
                                             "(faster start; peak memory is then not the run's own).")
@click.option("--resume", is_flag=True, help="Skip every (strategy, seed) that already has an ok row of this "
                                             "exact suite configuration in the results folder.")
@click.option("--nproc", type=click.IntRange(1), default=None,
              help="Train each run as a DDP job of N processes started by torchrun (sets launch.nproc).")
@click.option("--shard", default=None, metavar="K/N",
              help="Run only the K-th of N slices of the suite's runs (e.g. one task of a SLURM array).")
@translate_errors
def run(suite_file: str, device: str | None, out: str, overrides: tuple[str, ...], inline: bool,
        resume: bool, nproc: int | None, shard: str | None) -> None:
    """Train every strategy of SUITE_FILE once per seed and append one row per run.

    Example: lstmbench run suites/packing.yaml --set seeds=[0]

    Under torchrun (torchrun --nnodes ... -m lstmbench run SUITE), every process joins torchrun's group and
    each run trains across all of them; rank 0 writes the rows.
    """
    from .ddp import leave_group, torchrun_world

    slice_ = parse_shard(shard)  # bad input fails before anything starts
    overrides += (f"launch.nproc={nproc}",) if nproc else ()
    world = torchrun_world()
    if world:  # the launcher decides the world size
        overrides += (f"launch.nproc={world}",)
    suite = load_suite(suite_file, overrides, device)
    if not world:
        return _run(suite, out, inline, resume, shard, slice_)
    try:
        return _run(suite, out, inline, resume, shard, slice_, _join_torchrun(suite))
    finally:
        leave_group()


def _run(suite: Any, out: str, inline: bool, resume: bool, shard: str | None, slice_: tuple[int, int] | None,
         group: Any = None) -> None:
    from . import report, storage

    variants = expand_sweep(suite)  # the suite itself unless it sweeps keys
    for variant in variants:
        check_data(variant)
    planned = [plan_runs(v) for v in variants]
    if slice_:
        planned = shard_of(planned, *slice_)
    done = [storage.completed_runs(out, v.name, v.hash) if resume and not (group and group.rank) else {}
            for v in variants]
    if group:
        done = group.broadcast(done)  # rank 0 read the results folder; every rank runs the same plan
    runs = [[r for r in p if (r.spec.name, r.seed) not in d] for p, d in zip(planned, done)]
    if group and group.rank:  # another rank of the user's torchrun: train, store and print nothing
        for v, d, r in zip(variants, done, runs):
            for failure in run_suite(v, done=d, runs=r, group=group):  # only failures come back here
                click.echo(f"Error: rank {group.rank}: {failure.strategy} seed {failure.seed}: {failure.status}: "
                           f"{failure.error}", err=True)
                sys.exit(EXIT_RUNS_FAILED)  # torchrun then stops the job; rank 0 may be in a collective
        return
    bar: Any = None

    def on_start(planned: Any, i: int, n: int) -> None:
        bar.set_description(f"{planned.spec.name} seed {planned.seed}")

    def on_progress(step: int, steps: int) -> None:
        bar.set_postfix_str(f"step {step}/{steps}")

    # made before any run starts, so a device that is not there fails the command at once
    streams = [run_suite(v, isolate=not inline, done=d, on_start=on_start, on_progress=on_progress, runs=r,
                         group=group) for v, d, r in zip(variants, done, runs)]
    records = (record for stream in streams for record in stream)
    total = sum(len(r) for r in runs)
    run_file = storage.new_run_file(out, suite.name)
    full = sum(len(p) for p in planned)
    if resume:
        click.echo(f"Resuming: {full - total} runs already have ok rows (configuration "
                   f"{', '.join(v.hash for v in variants)}); {total} to run.", err=True)
    if not total:
        click.echo("Nothing to run." if resume or not slice_ else f"Nothing to run: shard {shard} is empty.")
        return
    everything = len(plan_runs(suite)) * len(variants)
    left = "" if total == everything else f" ({total} to run{f', shard {shard}' if slice_ else ''})"
    click.echo(f"{suite.name}: {_count(suite, everything, len(variants))}{left}; rows go to {run_file.path}",
               err=True)
    failed = finished = 0
    bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, disable=None)  # no bar in logs

    try:
        for record in records:
            record.shard = shard or ""
            run_file.append(record.to_dict())
            finished += 1
            bar.update(1)
            if record.status == "ok":
                bar.write(f"  {record.summary()}", file=sys.stderr)
            else:
                failed += 1
                bar.write(f"  {record.strategy} seed {record.seed}: {record.status}: {record.error}", file=sys.stderr)
                if group:  # the other ranks cannot go on in step: stop the job, keep the rows
                    bar.close()
                    click.echo(f"Error: a run failed under torchrun; the job stops here. {finished} row(s) kept in "
                               f"{run_file.path}; run again with --resume.", err=True)
                    sys.exit(EXIT_RUNS_FAILED)
    except KeyboardInterrupt:
        bar.close()
        click.echo(f"Interrupted: {finished} finished run(s) kept in {run_file.path}", err=True)
        sys.exit(130)
    bar.close()
    loaded = storage.load_rows([run_file.path])
    for suite_report in report.build_reports(loaded.rows):
        for section in suite_report.sections:
            click.echo(section.table().to_markdown(index=False))
    click.echo(f"\n{finished} rows appended to {run_file.path}; `lstmbench report` makes tables and plots.")
    if failed:
        click.echo(f"Error: {failed} of {finished} runs failed; their rows carry the status and error.", err=True)
        sys.exit(EXIT_RUNS_FAILED)


def _join_torchrun(suite: Any) -> Any:
    from .ddp import join_group
    from .probes import resolve_device

    return join_group(suite.launch.backend, resolve_device(suite.device).type)


@main.command(name="report")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", default=None, help="Write each suite's report to OUT/<suite>/ "
                                          "(default: the report/ folder beside the suite's results).")
@click.option("--pool", is_flag=True, help="Pool rows measured by different lstmbench commits or torch versions "
                                           "into one section (named POOLED, listing each); default: apart.")
@translate_errors
def report_cmd(paths: tuple[str, ...], out: str | None, pool: bool) -> None:
    """Tables and plots from result files or folders (default: results/).

    Example: lstmbench report results/packing
    """
    from . import report, storage

    loaded = storage.load_rows(paths or ["results"])
    for warning in loaded.skipped:
        click.echo(f"Warning: {warning}", err=True)
    for suite_report in report.build_reports(loaded.rows, pool=pool):
        folder = Path(out) / suite_report.suite if out else _default_report_dir(loaded.rows, suite_report.suite)
        written = storage.write_files(folder, suite_report.files())
        click.echo(suite_report.markdown())
        click.echo(f"Wrote {len(written)} files to {folder}\n")


def _count(suite: Any, runs: int, points: int = 1) -> str:
    ideal = " + the ideal" if suite.ideal else ""
    sweep = f" x {points} sweep points" if points > 1 else ""
    return (f"{len(suite.strategies)} strategies{ideal} x {len(suite.seeds)} seeds{sweep} = {runs} runs "
            f"on {suite.device}")


def _point(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _default_report_dir(rows: Any, suite: str) -> Path:
    from . import storage

    first = Path(rows.loc[rows["suite"] == suite, "source_file"].iloc[0])
    if first.parent.name == suite:
        return first.parent / storage.REPORT_DIR
    return storage.report_dir("results", suite)


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a suite key.")
@translate_errors
def validate(suite_file: str, overrides: tuple[str, ...]) -> None:
    """Check SUITE_FILE without running it."""
    suite = load_suite(suite_file, overrides)
    variants = expand_sweep(suite)
    for variant in variants:
        check_data(variant)
    runs = len(plan_runs(suite)) * len(variants)
    click.echo(f"{suite_file}: ok: suite {suite.name!r}, {_count(suite, runs, len(variants))} "
               f"(configuration {suite.hash})")
    for variant in variants if suite.sweep else []:
        click.echo(f"  sweep point {_point(variant.point)} (configuration {variant.hash})")
    for spec in suite.strategies:
        click.echo(f"  {describe(spec, suite.model.bidirectional, suite.data.task == 'tag')}")


@main.command(name="verify")
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a suite key.")
@click.option("--batches", default=3, show_default=True, help="Batches checked per strategy.")
@click.option("--nproc", type=click.IntRange(2), default=None,
              help="Also check the strategies' distributed forms on N ranks (torchrun, gloo, CPU).")
@translate_errors
def verify_cmd(suite_file: str, overrides: tuple[str, ...], batches: int, nproc: int | None) -> None:
    """Check each strategy's loss and gradients against a per-sequence reference of what it claims to compute
    (each sequence alone; cut to max_len for truncate; padded to its batch's width where the readout runs over
    the padding), on real batches of the suite's data, the batch with the longest sequence included: in
    float64 on the generic kernel, then on the timed path (the suite's device, train.amp and kernel) against
    a float64 reference, with a tolerance fitted to the precision. With --nproc (or the suite's launch.nproc
    > 1), also check that each distributed form gives every example once per epoch and that the gradients
    after DDP's all-reduce equal one process's on the union of the ranks' batches. Exit 1 on a mismatch.

    Example: lstmbench verify suites/packing.yaml --set model.bidirectional=true
    """
    from .verify import (MISMATCH, TimedPathUnavailable, mismatch, tally, timed_device, timed_table, verdict_table,
                         verify_suite, verify_timed)

    suite = load_suite(suite_file, overrides)
    verdicts = verify_suite(suite, batches=batches)
    click.echo(tabulate(verdict_table(verdicts), headers="keys", tablefmt="pipe", disable_numparse=True))
    click.echo(f"\nAll {len(verdicts)} strategies verified: {tally([v.verdict for v in verdicts])}.")
    bad = [v.strategy for v in verdicts if v.verdict == MISMATCH]
    bad_timed, where = [], ""
    try:
        device = timed_device(suite)
    except TimedPathUnavailable as e:
        click.echo(f"\nOn the timed path: skipped: {e}.")
    else:
        timed = verify_timed(suite, batches=batches)
        where = f"{device.type}, {timed[0].check.precision}"
        click.echo(f"\nOn the timed path ({device.type}, train.amp {suite.train.amp}): each strategy's batched loss "
                   "and gradients against its own per-sequence reference in float64")
        click.echo(tabulate(timed_table(timed), headers="keys", tablefmt="pipe", disable_numparse=True))
        bad_timed = [t.strategy for t in timed if t.check.verdict == MISMATCH]
        click.echo(f"\nAll {len(timed)} strategies checked on the timed path ({where}): "
                   f"{tally([t.check.verdict for t in timed])}.")
    ranks = nproc or suite.launch.nproc
    bad_ranks = [v["strategy"] for v in _verify_ranks(suite, ranks, batches)] if ranks > 1 else []
    problems = [mismatch(bad, "")] if bad else []
    problems += [mismatch(bad_timed, f" on the timed path ({where})")] if bad_timed else []
    if bad_ranks:
        noun = "distributed form does" if len(bad_ranks) == 1 else "distributed forms do"
        problems.append(f"{len(bad_ranks)} {noun} not match one process on the union of its {ranks} ranks' "
                        f"batches: {', '.join(bad_ranks)}")
    if problems:
        click.echo(f"Error: {'; '.join(problems)}", err=True)
        sys.exit(EXIT_RUNS_FAILED)


def _verify_ranks(suite: Any, ranks: int, batches: int) -> list[dict[str, Any]]:
    """Run the distributed check under torchrun, print its table, return the mismatches."""
    from .errors import LstmbenchError
    from .verify import MISMATCH, distributed_table
    from .worker import torchrun_job

    ended = torchrun_job({"kind": "verify", "suite": suite, "batches": batches}, ranks, suite.threads)
    if not isinstance(ended.result, list):
        raise LstmbenchError(f"the distributed check on {ranks} ranks failed (torchrun exit code {ended.code}): "
                             f"{ended.last_error}")
    click.echo(f"\nDistributed forms on {ranks} ranks (gloo): DDP's all-reduced loss and gradients against one "
               "process on the union of the ranks' batches")
    click.echo(tabulate(distributed_table(ended.result), headers="keys", tablefmt="pipe"))
    bad = [v for v in ended.result if v["verdict"] == MISMATCH]
    click.echo(f"\n{len(ended.result) - len(bad)} of {len(ended.result)} distributed forms equal one process on "
               "the union of their batches.")
    return bad


@main.command(name="lengths")
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a suite key.")
@click.option("--seed", type=int, default=None, help="Whose data (default: the suite's first seed).")
@translate_errors
def lengths_cmd(suite_file: str, overrides: tuple[str, ...], seed: int | None) -> None:
    """What padding would cost, in a second: length statistics, a histogram, and for each strategy the
    padding fraction, batches and largest batch shape of one epoch. Nothing is trained. SUITE_FILE may also
    be a .csv, .tsv or .jsonl data file (columns text and label; --set data.text_column=... to change).

    Example: lstmbench lengths suites/real.yaml --set train.batch_size=128
    """
    from .planner import DATA_SUFFIXES, data_suite, histogram, plan_suite

    if Path(suite_file).suffix.lower() in DATA_SUFFIXES:  # a data file: the presets over its lengths
        suite = data_suite(suite_file, overrides)
    else:
        suite = load_suite(suite_file, overrides)
    plan = plan_suite(suite, seed)
    st = plan.stats
    click.echo(f"{plan.suite}: {st.n:,} training sequences (seed {plan.seed})")
    click.echo(f"  min {st.min}  median {st.median:g}  p90 {st.p90:g}  p99 {st.p99:g}  max {st.max}  "
               f"mean {st.mean:.1f}\n")
    for line in histogram(plan.lengths):
        click.echo(f"  {line}")
    if suite.launch.nproc > 1:
        click.echo(f"\nOne epoch on {suite.launch.nproc} DDP ranks ({suite.train.batch_size} sequences a rank a step); "
                   "planned wait % = rank time spent waiting for the slowest rank, if time went with padded cells.")
    click.echo("\n" + tabulate(plan.table(), headers="keys", tablefmt="pipe"))


@main.command()
def strategies() -> None:
    """List the strategy presets and the choices they compose."""
    for name, desc in DESCRIPTIONS.items():
        click.echo(f"{name:<13}{desc}")
    click.echo(f"{'ideal':<13}added to every suite (unless `ideal: false`): each batch's tokens cut into "
               "equal rows, no padding, a fixed batch size (efficiency divides by each run's own unpadded batches)")
    click.echo("\nA strategy composes one choice of each (give `name`, `batching`, `padding`, `readout`):")
    for axis, options in CHOICE_HELP.items():
        for value, text in options.items():
            click.echo(f"  {axis + ':':<9} {value:<13}{text}")


EXIT_REGRESSION = 3  # compare found a regression: distinct from bad input (2) and from a crash (1)


@main.command(name="compare")
@click.argument("baseline", type=click.Path())
@click.argument("current", type=click.Path())
@click.option("--threshold", default=0.05, show_default=True, type=click.FloatRange(0, None),
              help="Smallest relative change that can count as a regression.")
@click.option("--alpha", default=0.02, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="False-alarm rate of a whole comparison of unchanged code (Benjamini-Hochberg over every gated test).")
@translate_errors
def compare_cmd(baseline: str, current: str, threshold: float, alpha: float) -> None:
    """Compare two result sets (files or folders) per suite, strategy, device, hardware and torch version.

    Exit 0: no regression; 3: a regression (larger than --threshold and significant after correction, an
    accuracy fall beyond its tolerance, a strategy with no ok run now, or a target no longer reached);
    2: bad input, or too few runs to test anything.

    Example: lstmbench compare results/baselines/gpu results/gpu
    """
    from .compare import compare_results

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


@main.command(name="export")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["pytest-benchmark"]), default="pytest-benchmark",
              show_default=True, help="Output format.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The JSON file to write.")
@translate_errors
def export_cmd(results: tuple[str, ...], fmt: str, output: str) -> None:
    """Write the ok rows of RESULTS (files or folders) as a pytest-benchmark JSON file: one benchmark per
    suite, strategy and device, one round per run, each round's value its mean step time
    (train_time_s / steps, seconds; lower is better); tokens/s and accuracies go to extra_info.

    Example: lstmbench export --format pytest-benchmark results/packing -o packing.json
    """
    import json

    from . import storage
    from .errors import ResultsError
    from .export import to_pytest_benchmark

    loaded = storage.load_rows(results)
    for warning in loaded.skipped:
        click.echo(f"Warning: {warning}", err=True)
    document = to_pytest_benchmark(loaded.rows, source=", ".join(results))
    try:
        Path(output).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except (OSError, ValueError) as e:
        raise ResultsError(f"{output}: cannot write: {e}") from None
    click.echo(f"Wrote {len(document['benchmarks'])} benchmarks ({fmt}) to {output}")
