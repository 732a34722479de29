"""Looking before running: `validate`, `verify`, `lengths` and `strategies`. Nothing here is timed or stored."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from ..data import check_data
from ..measure import check_model, refuse_out_of_memory, resolve_device
from ..run import check_memory, plan_runs, preflight
from ..strategies import describe
from ..suite import CHOICE_HELP, DESCRIPTIONS, expand_sweep, load_suite
from .base import EXIT_RUNS_FAILED, count, main, translate_errors


def _point(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a suite key.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Override the suite's device.")
@click.option("--allow-code", is_flag=True, help="Run the suite's own model (model.factory: Python code named by the "
                                                  "suite); only for a suite you trust.")
@translate_errors
def validate(suite_file: str, overrides: tuple[str, ...], device: str | None, allow_code: bool) -> None:
    """Check SUITE_FILE without running it: the file, every sweep variant, each seed's data, and what `run`
    would refuse on this machine (the device, the precision, the model's memory), with the same sentence."""
    suite = load_suite(suite_file, overrides, device, allow_code)
    variants = expand_sweep(suite)
    for variant in variants:
        check_data(variant)
        preflight(variant)
        check_model(variant)
    runs = len(plan_runs(suite)) * len(variants)
    click.echo(f"{suite_file}: ok: suite {suite.name!r}, {count(suite, runs, len(variants))} "
               f"(configuration {suite.hash})")
    for variant in variants if suite.sweep else []:
        click.echo(f"  sweep point {_point(variant.point)} (configuration {variant.hash})")
    for spec in suite.strategies:
        click.echo(f"  {describe(spec, suite.model.bidirectional, suite.data.task == 'tag')}")


@main.command(name="verify")
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a suite key.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Override the suite's device.")
@click.option("--batches", default=3, show_default=True, type=click.IntRange(1), help="Batches checked per strategy.")
@click.option("--nproc", type=click.IntRange(2), default=None,
              help="Also check the strategies' distributed forms on N ranks (torchrun, gloo, CPU).")
@click.option("--allow-code", is_flag=True, help="Run the suite's own model (model.factory: Python code named by the "
                                                  "suite); only for a suite you trust.")
@translate_errors
def verify_cmd(suite_file: str, overrides: tuple[str, ...], device: str | None, batches: int,
               nproc: int | None, allow_code: bool) -> None:
    """Check each strategy's loss and gradients against a per-sequence reference of what it claims to compute
    (each sequence alone; cut to max_len for truncate; padded to its batch's width where the readout runs over
    the padding), on real batches of the suite's data, the batch with the longest sequence included: in
    float64 on the generic kernel, then on the timed path (the suite's device, train.amp and kernel) against
    a float64 reference, with a tolerance fitted to the precision. With --nproc (or the suite's launch.nproc
    > 1), also check that each distributed form gives every example once per epoch and that the gradients
    after DDP's all-reduce equal one process's on the union of the ranks' batches. Exit 1 on a mismatch; 2
    at once when the suite runs on cuda and torch sees no GPU (on auto or cpu, the timed path skips what this
    machine cannot run, and says so).

    Example: lstmbench verify suites/packing.yaml --set model.bidirectional=true
    """
    from ..measure import (
        MISMATCH,
        SuiteChecks,
        TimedPathUnavailable,
        mismatch,
        tally,
        timed_device,
        timed_table,
        verdict_table,
    )

    suite = load_suite(suite_file, overrides, device, allow_code)
    keras = [s.name for s in suite.strategies if s.framework == "keras"]
    if keras:  # Keras is imported only in a fresh interpreter of its backend: a run's
        click.echo(f"Keras strategies ({', '.join(keras)}): checked in each of their runs, in their backend's own "
                   "interpreter, against the same float64 per-sequence reference (the rows' `verified`).\n")
    if len(keras) == len(suite.strategies):
        return
    # A suite that asks for cuda is verified on its GPU or refused, as `run` refuses it: skipping its timed path
    # would pass (exit 0) a GPU job that checked nothing of what it times.
    if suite.device == "cuda":
        resolve_device(suite.device)
    check_memory(suite, "cpu")  # the reference runs on the CPU, in float64
    with refuse_out_of_memory("verify"):
        checks = SuiteChecks(suite, batches)  # both checks' data, model and float64 references, built once
        verdicts = checks.generic()
    click.echo(tabulate(verdict_table(verdicts), headers="keys", tablefmt="pipe", disable_numparse=True))
    for v in verdicts:
        if v.first:
            click.echo(f"{v.strategy}: first departs at {v.first}, in the batch against alone.")
    click.echo(f"\nAll {len(verdicts)} strategies verified: {tally([v.verdict for v in verdicts])}.")
    bad = [v.strategy for v in verdicts if v.verdict == MISMATCH]
    bad_timed, where = [], ""
    try:
        timed_on = timed_device(suite)
    except TimedPathUnavailable as e:
        click.echo(f"\nOn the timed path: skipped: {e}.")
    else:
        with refuse_out_of_memory("verify on the timed path"):
            timed = checks.timed()
        where = f"{timed_on.type}, {timed[0].check.precision}"
        click.echo(f"\nOn the timed path ({timed_on.type}, train.amp {suite.train.amp}): each strategy's batched loss "
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
    from ..errors import LstmbenchError
    from ..measure import MISMATCH
    from ..run import distributed_table, torchrun_job

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
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Whose data (default: the suite's first seed).")
@click.option("--tune", is_flag=True, help="Calibrate a cost model on this machine (timed training steps of the "
                                           "suite's model over a grid of batch shapes) and propose the exact "
                                           "strategy it predicts fastest, as a suite entry.")
@click.option("--memory-cap", type=float, default=None, metavar="MiB",
              help="With --tune: leave out candidates whose largest batch is predicted to need more than this "
                   "(default: no cap on a CPU, the free memory on CUDA).")
@click.option("--budget-s", type=float, default=None, metavar="S",
              help="With --tune: seconds of probing (default 60).")
@click.option("--check", is_flag=True, help="With --tune: then train the proposal and the best preset as `run` "
                                            "does (one seed, nothing stored) and compare measured with predicted.")
@click.option("--allow-code", is_flag=True, help="Run the suite's own model (model.factory: Python code named by the "
                                                  "suite); only for a suite you trust.")
@translate_errors
def lengths_cmd(suite_file: str, overrides: tuple[str, ...], seed: int | None, tune: bool,
                memory_cap: float | None, budget_s: float | None, check: bool, allow_code: bool) -> None:
    """What padding would cost, in a second: length statistics, a histogram, and for each strategy the
    padding fraction, batches, largest batch shape and distinct batch shapes of one epoch (and how many
    pad_multiple 8 would leave). Nothing is trained. SUITE_FILE may also be a .csv, .tsv or .jsonl data file
    (columns text and label; --set data.text_column=... to change).

    With --tune, training steps are timed (about --budget-s seconds) to fit step time and memory against batch
    shape, and every candidate (bucket, boundaries, token_budget compositions, the suite's own and the presets;
    exact readouts only) is predicted over one epoch of the real plan.

    Example: lstmbench lengths suites/real.yaml --set train.batch_size=128
    Example: lstmbench lengths suites/packing.yaml --tune --check
    """
    from ..errors import LstmbenchError
    from ..strategies import DATA_SUFFIXES, data_suite, histogram, padding_table

    if not tune and (memory_cap is not None or budget_s is not None or check):
        raise LstmbenchError("--memory-cap, --budget-s and --check go with --tune")
    if tune:  # before the plan is printed: a bad option is refused first
        from ..tune import BUDGET_S, check_options

        check_options(BUDGET_S if budget_s is None else budget_s, memory_cap)

    if Path(suite_file).suffix.lower() in DATA_SUFFIXES:  # a data file: the presets over its lengths
        suite = data_suite(suite_file, overrides)
    else:
        suite = load_suite(suite_file, overrides, allow_code=allow_code or not tune)  # a model runs only to tune
    plan = padding_table(suite, seed)
    st = plan.stats
    click.echo(f"{plan.suite}: {st.n:,} training sequences (seed {plan.seed})")
    click.echo(f"  min {st.min}  median {st.median:g}  p90 {st.p90:g}  p99 {st.p99:g}  max {st.max}  "
               f"mean {st.mean:.1f}\n")
    for line in histogram(plan.lengths):
        click.echo(f"  {line}")
    if suite.launch.nproc > 1:
        click.echo(f"\nOne epoch on {suite.launch.nproc} DDP ranks ({suite.train.batch_size} sequences a rank a step); "
                   "planned wait % = rank time spent waiting for the slowest rank, if time went with padded cells.")
    click.echo("\n" + tabulate(plan.table(), headers="keys", tablefmt="pipe", missingval="-"))
    if tune:
        _tune(suite, seed, memory_cap, budget_s, check)


def _tune(suite: Any, seed: int | None, memory_cap: float | None, budget_s: float | None, check: bool) -> None:
    from ..tune import check_lines, tune_lines, tuner

    budget = tuner.BUDGET_S if budget_s is None else budget_s
    click.echo(f"\nProbing training steps on {suite.device} for about {budget:g} s ...", err=True)
    with refuse_out_of_memory("lengths --tune"):
        tuning = tuner.tune(suite, budget, memory_cap, seed)
    for line in tune_lines(tuning, suite.train.batch_size):
        click.echo(line)
    if tuning.busy:
        click.echo(f"Warning: {tuning.busy} while probing: the timings, and so the predictions, are unreliable.",
                   err=True)
    if not check:
        return
    click.echo(f"\nTraining the proposal and the best preset (seed {tuning.seed}, {suite.train.epochs} epochs, "
               "each run in a process of its own as `lstmbench run` does; nothing is stored) ...", err=True)
    run = tuner.check(suite, tuning)
    lines, warnings = check_lines(run, tuning, suite.train.epochs)
    for line in lines:
        click.echo(line)
    for warning in warnings:
        click.echo(warning, err=True)


@main.command()
def strategies() -> None:
    """List the strategy presets and the choices they compose."""
    for name, desc in DESCRIPTIONS.items():
        click.echo(f"{name:<13}{desc}")
    click.echo(f"{'ideal':<13}added to every suite (unless `ideal: false`): each batch's tokens cut into "
               "equal rows, no padding, a fixed batch size (efficiency divides by each run's own unpadded batches)")
    click.echo("\nA strategy composes one choice of each (give `name`, `batching`, `padding`, `readout`; "
               "`framework` and its `backend` for Keras):")
    for axis, options in CHOICE_HELP.items():
        for value, text in options.items():
            click.echo(f"  {axis + ':':<10} {value:<13}{text}")

