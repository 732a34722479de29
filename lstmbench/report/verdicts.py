"""Decisions as data. What a strategy computes, how its accuracy compares with the best exact strategy's, and
how loud a report note is: each is an enum that code decides on, travelling beside the sentence people read.
A `Verdict` is that sentence with its kind attached; no code reads the words back (tests/test_recommend.py
rewords every verdict and shows the recommendation unchanged)."""
from __future__ import annotations

from enum import Enum
from typing import Any


class _Kind(str, Enum):
    def __str__(self) -> str:  # its value in a CSV or a message, on every Python
        return self.value


class Computes(_Kind):
    """What a strategy's timed path computes, as its runs' own checks found it."""
    EXACT = "exact"  # equals per-sequence processing (verified in the runs, or claimed where they did not check)
    CHANGES = "changes"  # changes the computation by design (truncation, a readout after the padding, ...)
    MISMATCH = "mismatch"  # a run's check found its timed path off what it claims
    REFERENCE = "reference"  # the unpadded reference (the ideal): it claims nothing


class Accuracy(_Kind):
    """A strategy's accuracy against the best exact strategy's, paired by seed (quality.accuracy_verdicts)."""
    BEST = "best"  # the best exact strategy itself
    BELOW = "below"  # significantly below it (the permutation test, at the section's level)
    UNDECIDED = "undecided"  # lower, and the test cannot tell it from chance with these seeds
    NO_SHORTFALL = "no shortfall"  # as high or higher
    UNTESTED = "untested"  # fewer than 2 seeds in common: no test
    NONE = "none"  # no verdict: no exact strategy, or no accuracy (the ideal)


class Level(_Kind):
    """How loud a report note is: the HTML report lifts warnings into its alert box."""
    INFO = "info"  # among the notes
    NOTICE = "notice"  # among the notes, and flagged in the alert box too
    WARNING = "warning"  # in the alert box only


class Verdict(str):
    """A sentence carrying the decision it renders: code reads `kind`, people read the text."""
    kind: Enum

    def __new__(cls, kind: Enum, text: str) -> Verdict:
        self = super().__new__(cls, text)
        self.kind = kind
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Verdict, (self.kind, str(self)))


def kind_of(value: Any, default: Enum) -> Enum:
    """A verdict's kind; `default` for plain text (a column of old rows, a hand-made table)."""
    return getattr(value, "kind", default)
