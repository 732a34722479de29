"""`lstmbench run`: train every strategy of a suite, one row per run, each stored as it ends."""
from __future__ import annotations

import json
import shlex
import sys
from typing import Any, Callable

import click
from tqdm import tqdm

from ..errors import LstmbenchError
from ..measure import SETTLE_MAX_S, Disturbance
from ..run import (
    MIN_STABLE_SEEDS,
    Finished,
    JobStopped,
    NothingToRun,
    RankFailed,
    Resuming,
    RowNotStored,
    RunEnded,
    RunOptions,
    RunSession,
    RunStarted,
    Starting,
    StepDone,
    UntilStable,
    parse_shard,
)
from ..suite import load_suite
from .base import EXIT_INTERRUPTED, EXIT_RUNS_FAILED, count, main, translate_errors


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False))
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Override the suite's device.")
@click.option("--out", default="results", show_default=True, help="Results folder.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a suite key, e.g. --set train.epochs=1 (repeatable).")
@click.option("--allow-code", is_flag=True, help="Run the suite's own model (model.factory: Python code named by the "
                                                  "suite); only for a suite you trust.")
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
        spawn: bool, rerun_disturbed: int, settle: float, allow_code: bool) -> None:
    """Train every strategy of SUITE_FILE once per seed and append one row per run.

    Example: lstmbench run suites/packing.yaml --set seeds=[0]

    Under torchrun (torchrun --nnodes ... -m lstmbench run SUITE), every process joins torchrun's group and
    each run trains across all of them; rank 0 writes the rows.
    """
    from ..measure import leave_group, torchrun_world

    parse_shard(shard)  # bad input fails before anything starts
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
    suite = load_suite(suite_file, overrides, device, allow_code)
    if stable is not None:
        stable.check(suite)
    options = RunOptions(inline, resume, shard, "spawn" if spawn else None, stable, rerun_disturbed, settle)
    if not world:
        return _run(RunSession(suite, out, options))
    try:
        return _run(RunSession(suite, out, options, _join_torchrun(suite)))
    finally:
        leave_group()


def _run(session: RunSession) -> None:
    """The session's events as lines, a progress bar and an exit status."""
    progress = _Progress()
    with session:
        try:
            for event in session.events(progress):
                RENDER[type(event)](event, progress)
        except KeyboardInterrupt:
            if progress.path is None:  # before the first run: as any command interrupted
                raise
            progress.bar.close()
            click.echo(f"Interrupted: {progress.finished} finished run(s) kept in {progress.path}", err=True)
            sys.exit(EXIT_INTERRUPTED)


class _Progress:
    """The terminal's view of the session: the progress bar (from the first run on), the rows kept so far."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.path: Any = None
        self.finished = 0

    def __call__(self, event: RunStarted | StepDone) -> None:
        if self.bar is None:
            return
        if isinstance(event, RunStarted):
            self.bar.set_description(f"{event.planned.spec.name} seed {event.planned.seed}")
        else:
            self.bar.set_postfix_str(f"step {event.step}/{event.steps}")


def _rank_failed(event: RankFailed, progress: _Progress) -> None:
    record = event.record
    click.echo(f"Error: rank {event.rank}: {record.strategy} seed {record.seed}: {record.status}: "
               f"{record.error}", err=True)
    sys.exit(EXIT_RUNS_FAILED)  # torchrun then stops the job; rank 0 may be in a collective


def _resuming(event: Resuming, progress: _Progress) -> None:
    click.echo(f"Resuming: {event.already} runs already have ok rows (configuration {', '.join(event.hashes)}); "
               f"{event.to_run} to run.", err=True)


def _nothing(event: NothingToRun, progress: _Progress) -> None:
    click.echo(f"Nothing to run: shard {event.empty_shard} is empty." if event.empty_shard else "Nothing to run.")


def _starting(event: Starting, progress: _Progress) -> None:
    stable = event.until_stable
    left = "" if event.to_run == event.planned else \
        f" ({event.to_run} to run{f', shard {event.shard}' if event.shard else ''})"
    if stable:
        left = (f", then more seeds until each strategy's tokens/s is within +-{stable.percent:g}% of its median "
                f"(at most {stable.max_seeds} seeds)")
    click.echo(f"{event.suite.name}: {count(event.suite, event.planned, event.variants)}{left}; rows go to "
               f"{event.path}", err=True)
    progress.path = event.path
    progress.bar = tqdm(total=event.to_run, unit="run", file=sys.stderr, dynamic_ncols=True,
                        disable=None)  # no bar in logs


def _run_ended(event: RunEnded, progress: _Progress) -> None:
    bar, record = progress.bar, event.record
    progress.finished = event.finished
    bar.update(1)
    if record.status != "ok":
        bar.write(f"  {record.strategy} seed {record.seed}: {record.status}: {record.error}", file=sys.stderr)
        return
    bar.write(f"  {record.summary()}", file=sys.stderr)
    if record.disturbed_attempts or record.disturbance == Disturbance.DISTURBED.value:
        bar.write(f"    {disturbance_line(record)}", file=sys.stderr)


def _row_not_stored(event: RowNotStored, progress: _Progress) -> None:
    progress.bar.close()
    click.echo(json.dumps(event.record.to_dict(), sort_keys=True))  # the rescued row, on stdout
    click.echo(f"Error: {event.error}. Stopped: {event.kept} row(s) kept in {event.path}, {event.not_started} "
               "run(s) not started; once the folder can be written, move the rescued row into it and run again "
               "with --resume.", err=True)
    sys.exit(EXIT_RUNS_FAILED)


def _job_stopped(event: JobStopped, progress: _Progress) -> None:
    progress.bar.close()
    click.echo(f"Error: a run failed under torchrun; the job stops here. {event.finished} row(s) kept in "
               f"{event.path}; run again with --resume.", err=True)
    sys.exit(EXIT_RUNS_FAILED)


def _finished(event: Finished, progress: _Progress) -> None:
    from ..report import summary as report

    progress.bar.close()
    for suite_report in report.build_reports(event.rows):
        for section in suite_report.sections:
            click.echo(section.table().to_markdown(index=False))
    if event.until_stable:
        click.echo(report.stability_note(event.rows[event.rows["status"] == "ok"]))
    folder = shlex.quote(str(event.path.parent))
    click.echo(f"\n{event.finished} rows appended to {event.path}.\nReport of this suite's runs (tables, plots, "
               f"HTML): lstmbench report {folder}\nRecommendation: lstmbench recommend {folder}")
    if event.overhead:
        click.echo(event.overhead.sentence())
    if event.failed:
        click.echo(f"Error: {event.failed} of {event.finished} runs failed; their rows carry the status and error.",
                   err=True)
        sys.exit(EXIT_RUNS_FAILED)


# each of the session's events, on the terminal
RENDER: dict[type, Callable[[Any, _Progress], None]] = {
    RankFailed: _rank_failed, Resuming: _resuming, NothingToRun: _nothing, Starting: _starting,
    RunEnded: _run_ended, RowNotStored: _row_not_stored, JobStopped: _job_stopped, Finished: _finished}


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

