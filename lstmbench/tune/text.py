"""What `lstmbench lengths --tune` says: the probes and fits, the top candidates, the proposal, and the check
of the proposal against the best preset. Sentences only: the decisions are the tuner's."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

from .costmodel import MARGIN, PADDED
from .tuner import DRIFT_PROBES

TOP = 12  # candidates shown: the proposal, the best preset and their neighbours


def tune_lines(t: Any, batch_size: int) -> list[str]:
    """The probe summary, the fits, the top candidates and the proposal."""
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


def check_lines(run: Any, tuning: Any, epochs: int) -> tuple[list[str], list[str]]:
    """--check: the proposal and the best preset, predicted against measured; (lines, warnings)."""
    checked = run.checked
    lines = [f"\nCheck: measured as `lstmbench run` measures (steady-state training time, batch preparation in), "
             f"seed {tuning.seed}, {epochs} epochs:"]
    rows = [{"strategy": c.strategy, "predicted tokens/s": f"{c.predicted:,.0f}",
             "measured tokens/s": f"{c.measured:,.0f}" if c.measured else f"{c.status}: {c.error}",
             "prediction error %": f"{c.error_percent:+.1f}" if c.error_percent is not None else "-"}
            for c in checked]
    lines.append(tabulate(rows, headers="keys", tablefmt="pipe", disable_numparse=True))
    warnings = [f"Warning: {c.strategy}: {c.busy}: its measurement is unreliable." for c in checked if c.busy]
    if len(checked) == 2 and all(c.measured for c in checked):
        ratio = checked[0].measured / checked[1].measured
        lines.append(f"Measured: tuned at {ratio:.2f}x {checked[1].strategy} (predicted "
                     f"{checked[0].predicted / checked[1].predicted:.2f}x).")
    elif len(checked) == 1:
        lines.append(f"The proposal is {checked[0].strategy} itself: trained once.")
    if run.drift:
        before, after = run.drift
        lines.append(f"The machine's speed ({DRIFT_PROBES} probed shapes timed again): {before:.2f}x what it was "
                     f"while probing before the runs, {after:.2f}x after them: the predictions are at the speed of "
                     "the probing, and a drift between then and the runs is in their error.")
    return lines, warnings
