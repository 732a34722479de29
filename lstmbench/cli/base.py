"""The command group, exit codes and the error translation every command shares (the package's __init__
imports the commands, which import this: one way)."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import LstmbenchError
from ..version import __version__

EXIT_BAD_INPUT = 2  # bad suite, bad result files, bad options (click's own usage errors are 2 too)
EXIT_RUNS_FAILED = 1  # the suite ran, but some runs failed (their rows say why), or a row could not be stored
EXIT_REGRESSION = 3  # compare found a regression: distinct from bad input (2) and from a crash (1)
EXIT_TOO_BUSY = 2  # recommend or compare cannot decide: too few runs were measured on a quiet machine
EXIT_INTERRUPTED = 130  # Ctrl-C: the shell's 128 + SIGINT
MAX_MESSAGE = 600  # characters of an error message: one line a terminal can show, whatever it quotes


class CliError(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def translate_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LstmbenchError as e:
            text = " ".join(str(e).split("\n"))  # one line, whatever a message quotes, and a short one
            raise CliError(text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "...") from None
    return wrapper


class OneLineGroup(click.Group):
    """click, with its usage errors (an unknown option, a missing argument) in one line like every other error:
    `Error: No such option '--x'; see lstmbench run --help`, exit 2; click prints three."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # `lstmbench` alone: the help, as click prints it
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "lstmbench"
            message = e.format_message()  # "No such option '--x'." or "... Did you mean '--out'?"
            joined = f"{message} See" if message.endswith("?") else f"{message.rstrip('.')}; see"
            click.echo(f"Error: {joined} {where} --help", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except BrokenPipeError:  # `lstmbench report | head`: the reader left; what is left to print goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineGroup, name="lstmbench")
@click.version_option(__version__, prog_name="lstmbench")
def main() -> None:
    """Benchmark batching strategies for variable-length LSTM training."""


def count(suite: Any, runs: int, points: int = 1) -> str:
    ideal = " + the ideal" if suite.ideal else ""
    sweep = f" x {points} sweep points" if points > 1 else ""
    return (f"{len(suite.strategies)} strategies{ideal} x {len(suite.seeds)} seeds{sweep} = {runs} runs "
            f"on {suite.device}")


def default_results(paths: tuple[str, ...]) -> list[str]:
    """The paths given, or results/; a first-time user without it is told where results come from."""
    if paths:
        return list(paths)
    if not Path("results").exists():
        raise LstmbenchError("results: no such folder: run a suite first (lstmbench run suites/packing.yaml), or "
                             "name result files or folders (the committed reference results: reference/)")
    return ["results"]
