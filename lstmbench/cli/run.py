"""`lstmbench run`: train every strategy of a suite, one row per run, each stored as it ends."""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Any

import click
from tqdm import tqdm

from ..data import check_data
from ..errors import LstmbenchError
from ..measure import SETTLE_MAX_S, Disturbance
from ..results import harness_overhead
from ..run import MIN_STABLE_SEEDS, UntilStable, parse_shard, plan_runs, preflight, run_suite, seed_runs, shard_of
from ..suite import expand_sweep, load_suite
from .base import EXIT_INTERRUPTED, EXIT_RUNS_FAILED, count, main, translate_errors


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
@click.option("--until-stable", type=click.FloatRange(0, min_open=True), default=None, metavar="P",
              help="Add seeds (every strategy still unstable runs each) until every strategy's tokens/s "
                   "interval is within +-P% of its median, or --max-seeds seeds are done.")
@click.option("--max-seeds", type=click.IntRange(MIN_STABLE_SEEDS), default=10, show_default=True,
              help="With --until-stable: the most seeds, the suite's own included.")
@click.option("--spawn", is_flag=True, help="Start each run from a fresh interpreter instead of the forkserver "
                                            "that has torch imported (slower to start; for comparison).")
@click.option("--rerun-disturbed", type=click.IntRange(0), default=2, show_default=True, metavar="N",
              help="Run a run again, up to N times, when other processes took the CPU while it was timed; the "
                   "row kept lists the disturbed attempts (0: keep every first attempt).")
@click.option("--settle", type=click.FloatRange(0), default=SETTLE_MAX_S, show_default=True, metavar="SECONDS",
              help="Before each run, wait up to this long for other processes to leave the CPU (0: do not look).")
@translate_errors
def run(suite_file: str, device: str | None, out: str, overrides: tuple[str, ...], inline: bool,
        resume: bool, nproc: int | None, shard: str | None, until_stable: float | None, max_seeds: int,
        spawn: bool, rerun_disturbed: int, settle: float) -> None:
    """Train every strategy of SUITE_FILE once per seed and append one row per run.

    Example: lstmbench run suites/packing.yaml --set seeds=[0]

    Under torchrun (torchrun --nnodes ... -m lstmbench run SUITE), every process joins torchrun's group and
    each run trains across all of them; rank 0 writes the rows.
    """
    from ..measure import leave_group, torchrun_world

    slice_ = parse_shard(shard)  # bad input fails before anything starts
    overrides += (f"launch.nproc={nproc}",) if nproc else ()
    world = torchrun_world()
    if world:  # the launcher decides the world size
        overrides += (f"launch.nproc={world}",)
    stable = None
    if until_stable is not None:
        clash = next((flag for flag, on in (("--shard", shard), ("--resume", resume), ("torchrun", world)) if on),
                     None)
        if clash:
            raise LstmbenchError(f"--until-stable decides the seeds as it goes, which {clash} cannot share; "
                                 "run it alone")
        stable = UntilStable(until_stable, max_seeds)
    elif max_seeds != 10:
        raise LstmbenchError("--max-seeds limits --until-stable; give --until-stable P too")
    suite = load_suite(suite_file, overrides, device)
    if stable is not None:
        stable.check(suite)
    options = Options(inline, resume, shard, slice_, "spawn" if spawn else None, stable, rerun_disturbed, settle)
    if not world:
        return _run(suite, out, options)
    try:
        return _run(suite, out, options, _join_torchrun(suite))
    finally:
        leave_group()


@dataclass(frozen=True)
class Options:
    inline: bool
    resume: bool
    shard: str | None
    slice: tuple[int, int] | None
    start: str | None  # None: the worker's default (forkserver where there is one)
    until_stable: UntilStable | None
    rerun_disturbed: int = 2  # why 2: a burst of load rarely outlasts three runs, and a steady one is said
    settle_s: float = SETTLE_MAX_S


def _run(suite: Any, out: str, options: Options, group: Any = None) -> None:
    from ..results import storage

    slice_, began = options.slice, time.perf_counter()

    variants = expand_sweep(suite)  # the suite itself unless it sweeps keys
    for variant in variants:
        check_data(variant)
        preflight(variant)  # what this machine refuses (no GPU, no bf16), before the folder is made and claimed
    planned = [plan_runs(v) for v in variants]
    if slice_:
        planned = shard_of(planned, *slice_)
    # one run at a time into a folder (a second is refused in one line): what --resume reads as done stays so
    claimed = storage.claim(out, suite.name, slice_) if not (group and group.rank) else None
    try:
        _run_claimed(suite, out, options, group, variants, planned, began)
    finally:
        storage.release(claimed)


def _run_claimed(suite: Any, out: str, options: Options, group: Any, variants: list, planned: list,
                 began: float) -> None:
    from ..report import summary as report
    from ..results import storage

    inline, resume, shard, slice_ = options.inline, options.resume, options.shard, options.slice
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
                         group=group, start=options.start, until_stable=options.until_stable,
                         rerun_disturbed=options.rerun_disturbed, settle_s=options.settle_s)
               for v, d, r in zip(variants, done, runs)]
    records = (record for stream in streams for record in stream)
    stable = options.until_stable
    total = sum(len(r) for r in runs) if not stable else len(seed_runs(suite, 0)) * stable.max_seeds * len(variants)
    full = sum(len(p) for p in planned)
    if resume:
        click.echo(f"Resuming: {full - total} runs already have ok rows (configuration "
                   f"{', '.join(v.hash for v in variants)}); {total} to run.", err=True)
    if not total:
        click.echo("Nothing to run." if resume or not slice_ else f"Nothing to run: shard {shard} is empty.")
        return
    run_file = storage.new_run_file(out, suite.name)  # the folder proven writable before the first run
    everything = len(plan_runs(suite)) * len(variants)
    left = "" if total == everything else f" ({total} to run{f', shard {shard}' if slice_ else ''})"
    if stable:
        left = (f", then more seeds until each strategy's tokens/s is within +-{stable.percent:g}% of its median "
                f"(at most {stable.max_seeds} seeds)")
    click.echo(f"{suite.name}: {count(suite, everything, len(variants))}{left}; rows go to {run_file.path}",
               err=True)
    failed = finished = 0
    bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, disable=None)  # no bar in logs

    try:
        for record in records:
            record.shard = shard or ""
            try:
                run_file.append(record.to_dict())
            except storage.AppendFailed as e:  # keep the row (printed, and rescued), stop before the next run
                bar.close()
                click.echo(json.dumps(record.to_dict(), sort_keys=True))
                click.echo(f"Error: {e}. Stopped: {run_file.rows} row(s) kept in {run_file.path}, "
                           f"{total - finished - 1} run(s) not started; once the folder can be written, move the "
                           "rescued row into it and run again with --resume.", err=True)
                sys.exit(EXIT_RUNS_FAILED)
            finished += 1
            bar.update(1)
            if record.status == "ok":
                bar.write(f"  {record.summary()}", file=sys.stderr)
                if record.disturbed_attempts or record.disturbance == Disturbance.DISTURBED.value:
                    bar.write(f"    {disturbance_line(record)}", file=sys.stderr)
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
        sys.exit(EXIT_INTERRUPTED)
    bar.close()
    wall = time.perf_counter() - began
    loaded = storage.load_rows([run_file.path])
    for suite_report in report.build_reports(loaded.rows):
        for section in suite_report.sections:
            click.echo(section.table().to_markdown(index=False))
    if stable:
        click.echo(report.stability_note(loaded.rows[loaded.rows["status"] == "ok"]))
    folder = shlex.quote(str(run_file.path.parent))
    click.echo(f"\n{finished} rows appended to {run_file.path}.\nReport of this suite's runs (tables, plots, HTML): "
               f"lstmbench report {folder}\nRecommendation: lstmbench recommend {folder}")
    cost = harness_overhead(loaded.rows.to_dict("records"), wall)
    if cost:
        click.echo(cost.sentence())
    if failed:
        click.echo(f"Error: {failed} of {finished} runs failed; their rows carry the status and error.", err=True)
        sys.exit(EXIT_RUNS_FAILED)


def disturbance_line(record: Any) -> str:
    """What other processes did to a run, under its line in the log: the attempts run again, and whether the
    row kept is still disturbed (then the report, recommend and compare leave it out)."""
    from ..measure import busy_warning

    again = len(record.disturbed_attempts)
    head = f"run again {again} time{'s' if again != 1 else ''}: other processes took the CPU" if again else ""
    if record.disturbance != Disturbance.DISTURBED.value:
        return f"{head}; this attempt was quiet"
    why = busy_warning(record.env, waits_count=not record.loader_workers) or "measured on a busy machine"
    return (f"{head}, and again in this attempt: " if again else "measured on a busy machine: ") + \
        f"{why}; the report, recommend and compare leave this row out"


def _join_torchrun(suite: Any) -> Any:
    from ..measure import join_group, resolve_device

    return join_group(suite.launch.backend, resolve_device(suite.device).type)

