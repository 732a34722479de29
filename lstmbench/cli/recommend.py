"""`recommend`: which strategy to train with, per report section, and why (the library decides: recommend.py)."""
from __future__ import annotations

import sys
from typing import Any

import click

from .base import EXIT_TOO_BUSY, default_results, main, translate_errors


@main.command(name="recommend")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "python"]), default="text", show_default=True,
              help="text: the recommendation, why, the runner-up and what was ruled out; python: a snippet of "
                   "lstmbench.batching set up as the recommended strategy.")
@click.option("--pool", is_flag=True, help="Pool rows measured by different lstmbench commits or torch versions "
                                           "into one section, as `report --pool` does.")
@translate_errors
def recommend_cmd(paths: tuple[str, ...], fmt: str, pool: bool) -> None:
    """Recommend a batching strategy from result files or folders (default: results/): per report section, the
    fastest to the suite's target accuracy (else the highest tokens/s) among the strategies that did not lose
    accuracy against the best exact one, did not fail and reached the target; or why the results cannot decide.

    Example: lstmbench recommend results/packing --format python
    """
    from ..report import python_snippet, recommend

    found = recommend(default_results(paths), pool=pool)
    for warning in found.skipped:
        click.echo(f"Warning: {warning}", err=True)
    if fmt == "python":
        click.echo("\n".join(python_snippet(rec) for rec in found.recommendations), nl=False)
    else:
        click.echo("\n\n".join("\n".join(text_lines(rec)) for rec in found.recommendations))
    busy = [rec for rec in found.recommendations if rec.too_busy]
    if busy:
        click.echo(f"Error: no recommendation for {len(busy)} of {len(found.recommendations)} section(s): too few "
                   "runs were measured on a quiet machine.", err=True)
        sys.exit(EXIT_TOO_BUSY)


def text_lines(rec: Any) -> list[str]:
    """One section's recommendation as the lines the terminal shows."""
    lines = [rec.title]
    if rec.winner is None:
        lines.append(f"  Undecided: {_sentence(rec.undecided)}")
    else:
        lines.append(f"  Recommended: {rec.winner}")
        lines.append(f"  Why: {_sentence(rec.why)}")
        lines.append(f"  Runner-up: {_sentence(rec.runner_up_cost, capital=False) if rec.runner_up else 'none'}")
    lines.append("  Ruled out:" if rec.ruled_out else "  Ruled out: none")
    lines += [f"    - {name}: {reason}" for name, reason in rec.ruled_out]
    if rec.disturbed:
        lines.append(f"  Left out: {len(rec.disturbed)} run{'s' if len(rec.disturbed) != 1 else ''} measured while "
                     "other processes took the CPU (`lstmbench report` says by how much): "
                     + "; ".join(f"{name} seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"
                                 for name, seeds in _by_strategy(rec.disturbed).items()))
    return lines


def _by_strategy(runs: list[tuple[str, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, seed in runs:
        out.setdefault(name, []).append(seed)
    return out


def _sentence(text: str | None, capital: bool = True) -> str:
    """A sentence as printed: capitalised (unless it starts with a strategy's name), with its full stop."""
    text = (text or "").strip()
    if not text:
        return ""
    return (text[:1].upper() + text[1:] if capital else text) + ("" if text.endswith(".") else ".")
