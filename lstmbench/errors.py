"""Errors: every message is the sentence a user reads after `Error: `."""
from __future__ import annotations


class LstmbenchError(Exception):
    """Base class; the CLI prints `Error: <message>` and exits 2."""


class SuiteError(LstmbenchError):
    """A suite file is wrong: names the file, the key path and what is wrong."""

    def __init__(self, file: str, path: str, message: str):
        self.file, self.path, self.message = file, path, message
        where = f"{file}: {path}: " if path else f"{file}: "
        super().__init__(where + message)


class ResultsError(LstmbenchError):
    """A results file or folder cannot be read or written."""


class RunFailed(LstmbenchError):
    """A run failed inside the worker; `kind` becomes the row's status."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


class BatchingError(LstmbenchError, ValueError):
    """A bad argument to the public batching API (lstmbench.batching): a ValueError, as Python code expects."""
