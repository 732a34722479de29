"""`recommend`: which strategy to train with, per report section, and why (the library decides: recommend.py)."""
from __future__ import annotations

from typing import Any

import click

from .base import default_results, main, translate_errors


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
    from ..recommend import python_snippet, recommend

    found = recommend(default_results(paths), pool=pool)
    for warning in found.skipped:
        click.echo(f"Warning: {warning}", err=True)
    if fmt == "python":
        click.echo("\n".join(python_snippet(rec) for rec in found.recommendations), nl=False)
        return
    click.echo("\n\n".join("\n".join(text_lines(rec)) for rec in found.recommendations))


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
    return lines


def _sentence(text: str | None, capital: bool = True) -> str:
    """A sentence as printed: capitalised (unless it starts with a strategy's name), with its full stop."""
    text = (text or "").strip()
    if not text:
        return ""
    return (text[:1].upper() + text[1:] if capital else text) + ("" if text.endswith(".") else ".")
