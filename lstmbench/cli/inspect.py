"""Looking before running: `validate`, `verify`, `lengths` and `strategies`. Nothing here is timed or stored."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from ..data import check_data
from ..measure import refuse_out_of_memory, resolve_device
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
@translate_errors
def validate(suite_file: str, overrides: tuple[str, ...], device: str | None) -> None:
    """Check SUITE_FILE without running it: the file, every sweep variant, each seed's data, and what `run`
    would refuse on this machine (the device, the precision, the model's memory), with the same sentence."""
    suite = load_suite(suite_file, overrides, device)
    variants = expand_sweep(suite)
    for variant in variants:
        check_data(variant)
        preflight(variant)
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
@translate_errors
def verify_cmd(suite_file: str, overrides: tuple[str, ...], device: str | None, batches: int,
               nproc: int | None) -> None:
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

    suite = load_suite(suite_file, overrides, device)
    # A suite that asks for cuda is verified on its GPU or refused, as `run` refuses it: skipping its timed path
    # would pass (exit 0) a GPU job that checked nothing of what it times.
    if suite.device == "cuda":
        resolve_device(suite.device)
    check_memory(suite, "cpu")  # the reference runs on the CPU, in float64
    with refuse_out_of_memory("verify"):
        checks = SuiteChecks(suite, batches)  # both checks' data, model and float64 references, built once
        verdicts = checks.generic()
    click.echo(tabulate(verdict_table(verdicts), headers="keys", tablefmt="pipe", disable_numparse=True))
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
@translate_errors
def lengths_cmd(suite_file: str, overrides: tuple[str, ...], seed: int | None, tune: bool,
                memory_cap: float | None, budget_s: float | None, check: bool) -> None:
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
        suite = load_suite(suite_file, overrides)
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


TOP = 12  # candidates shown: the proposal, the best preset and their neighbours


def _tune(suite: Any, seed: int | None, memory_cap: float | None, budget_s: float | None, check: bool) -> None:
    from ..tune import tuner

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
    checked = run.checked
    click.echo(f"\nCheck: measured as `lstmbench run` measures (steady-state training time, batch preparation in), "
               f"seed {tuning.seed}, {suite.train.epochs} epochs:")
    rows = [{"strategy": c.strategy, "predicted tokens/s": f"{c.predicted:,.0f}",
             "measured tokens/s": f"{c.measured:,.0f}" if c.measured else f"{c.status}: {c.error}",
             "prediction error %": f"{c.error_percent:+.1f}" if c.error_percent is not None else "-"}
            for c in checked]
    click.echo(tabulate(rows, headers="keys", tablefmt="pipe", disable_numparse=True))
    for c in checked:
        if c.busy:
            click.echo(f"Warning: {c.strategy}: {c.busy}: its measurement is unreliable.", err=True)
    if len(checked) == 2 and all(c.measured for c in checked):
        ratio = checked[0].measured / checked[1].measured
        click.echo(f"Measured: tuned at {ratio:.2f}x {checked[1].strategy} (predicted "
                   f"{checked[0].predicted / checked[1].predicted:.2f}x).")
    elif len(checked) == 1:
        click.echo(f"The proposal is {checked[0].strategy} itself: trained once.")
    if run.drift:
        before, after = run.drift
        click.echo(f"The machine's speed ({tuner.DRIFT_PROBES} probed shapes timed again): {before:.2f}x what it was "
                   f"while probing before the runs, {after:.2f}x after them: the predictions are at the speed of the "
                   "probing, and a drift between then and the runs is in their error.")


def tune_lines(t: Any, batch_size: int) -> list[str]:
    """The probe summary, the fits, the top candidates and the proposal."""
    from ..tune import MARGIN, PADDED

    probes = t.probed.probes
    shapes = len({(p.kind, p.rows, p.width) for p in probes})
    lines = [f"\nTuned on {t.device} ({t.threads} threads), seed {t.seed}: {len(probes)} probes of {shapes} batch "
             f"shapes ({t.probed.passes} passes) in {t.probed.seconds:.1f} s (budget {t.budget_s:g} s), rows "
             f"{min(p.rows for p in probes)}-{max(p.rows for p in probes)} x lengths {min(p.width for p in probes)}-"
             f"{max(p.width for p in probes)}, batch preparation in each step's time"
             + (f"; {t.probed.busy} timed while other processes used the CPU, timed again or left out"
                if t.probed.busy else "")]
    for kind, fit in t.model.steps.items():
        readouts = "mask, last" if kind == PADDED else "pack, pack_sorted"
        lines.append(f"  {kind} ({readouts}; {t.probed.kernels.get(kind, '?')} kernel): step = {fit.formula()}; "
                     f"fit error {100 * fit.mean_rel_error:.1f}% mean, {100 * fit.max_rel_error:.1f}% max over "
                     f"{fit.probes} probes")
    memory = "; ".join(f"{k} {m.base / 2**20:.2f} MiB + {m.per_cell / 1024:.2f} KiB x B x T"
                       + (f" + {m.per_real / 1024:.2f} KiB x real tokens" if m.per_real else "")
                       + f" ({100 * m.mean_rel_error:.1f}% error over {m.probes} probes)"
                       for k, m in t.model.memory.items())
    lines.append(f"  peak step memory ({t.model.memory_measure}): {memory or 'not modelled (too few probes)'}")
    cap = f"{t.memory_cap / 2**20:,.4g} MiB" if t.memory_cap else "none"
    lines.append(f"  memory cap: {cap}" + (f"; {len(t.over_cap)} candidates over it left out" if t.over_cap else ""))
    shown = t.ranked[:TOP]
    if t.proposal.preset not in shown:
        shown.append(t.proposal.preset)
    lines.append(f"\nTop of {len(t.ranked)} exact candidates, predicted over one epoch of seed {t.seed}'s plan (batch "
                 f"sizes within 2x of the suite's {batch_size}; a different batch size changes training):")
    rows = [{"#": t.ranked.index(p) + 1, "candidate": p.candidate.spec.name, "from": p.candidate.origin,
             "batch size": p.candidate.batch_size, "steps": p.steps,
             "pad %": f"{100 * (1 - p.real_tokens / p.padded_tokens):.1f}",
             "largest batch": f"{p.largest[0]} x {p.largest[1]}",
             "peak MiB": f"{p.peak_bytes / 2**20:.1f}" if p.peak_bytes else "-",
             "predicted tokens/s": f"{p.tokens_per_s:,.0f}"} for p in shown]
    lines.append(tabulate(rows, headers="keys", tablefmt="pipe", disable_numparse=True))
    if t.world > 1:
        lines.append(f"On {t.world} DDP ranks (probed with {t.threads} threads, a rank's share of the cores): a step "
                     "takes its slowest rank's predicted time; the gradient all-reduce is not modelled.")
    best, preset = t.proposal.best, t.proposal.preset
    name = best.candidate.spec.name
    if best is preset:
        origin = "one of the suite's own" if best.candidate.origin == "suite" else "a preset"
        lines.append(f"\nProposal: keep {name} ({origin}): no candidate is predicted {100 * MARGIN:.0f}% faster (the "
                     "predictions' noise). As an entry:")
    else:
        lines.append(f"\nProposal ({name}), to add to the suite's strategies:")
    lines.append(f"  {t.proposal.yaml}")
    if t.proposal.batch_size:
        lines.append(f"  with train.batch_size: {t.proposal.batch_size} (the suite has {batch_size}: this changes "
                     "training, its optimizer steps an epoch and so its accuracy; run it as a suite of its own)")
    lines.append(f"Predicted: {best.tokens_per_s:,.0f} tokens/s; the best of the suite's strategies and the presets, "
                 f"{preset.candidate.spec.name}: {preset.tokens_per_s:,.0f} tokens/s "
                 f"({best.tokens_per_s / preset.tokens_per_s:.2f}x).")
    return lines


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

