"""The command line: the only package that prints or exits. Library errors become `Error: ...`, exit 2.

The modules that pull in pandas, matplotlib and scipy (storage, report, compare) are imported inside the
commands: each run's child process re-imports this module (multiprocessing's spawn), and should hold no
more memory than training needs, so that its peak memory measures the run.
"""
from . import inspect, recommend, results, run  # noqa: E402,F401 - registers the commands on `main`
from .base import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_REGRESSION, EXIT_RUNS_FAILED, MAX_MESSAGE, CliError, main

__all__ = ["main", "CliError", "MAX_MESSAGE", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_REGRESSION",
           "EXIT_RUNS_FAILED"]
