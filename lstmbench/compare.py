"""Compare: a baseline result set against a current one -> per-metric verdicts and regression sentences.

A change is a regression only when it goes the wrong way, is larger than the threshold, and is
significant: a Mann-Whitney U test (asv's choice) below alpha, or disjoint 95% bootstrap intervals of
the medians. Each metric is judged in its own direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import storage
from .stats import bootstrap_ci, mann_whitney

THRESHOLD = 0.05  # 5%: asv's step-detection default; smaller changes are machine noise on shared runners
ALPHA = 0.05  # two-sided; with 4+ runs a side Mann-Whitney can reach it, with 3 only disjoint intervals can

# metric, higher is better, how to print a value
METRICS: tuple[tuple[str, bool, str], ...] = (
    ("tokens_per_s", True, "count"),
    ("samples_per_s", True, "count"),
    ("peak_mem_bytes", False, "bytes"),
    ("eval_accuracy", True, "fraction"),
    ("eval_accuracy_exact", True, "fraction"),
    ("time_to_target_s", False, "seconds"),
)
REGRESSION, IMPROVEMENT, NOT_SIGNIFICANT, UNCHANGED = "regression", "improvement", "not significant", "unchanged"


@dataclass(frozen=True)
class MetricChange:
    suite: str
    strategy: str
    device: str
    metric: str
    higher_is_better: bool
    unit: str
    baseline: list[float]
    current: list[float]
    threshold: float
    alpha: float

    @property
    def group(self) -> str:
        return f"{self.suite}/{self.strategy} on {self.device}"

    @property
    def base_median(self) -> float:
        return float(np.median(self.baseline))

    @property
    def current_median(self) -> float:
        return float(np.median(self.current))

    @property
    def change(self) -> float:
        """Relative change of the median, current against baseline."""
        if self.base_median == 0:
            return 0.0 if self.current_median == 0 else math.copysign(math.inf, self.current_median)
        return (self.current_median - self.base_median) / abs(self.base_median)

    @property
    def p_value(self) -> float:
        if np.ptp(self.baseline + self.current) == 0:
            return 1.0  # every value equal: nothing to test
        p = mann_whitney(self.baseline, self.current)
        return 1.0 if math.isnan(p) else p

    @property
    def intervals(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return bootstrap_ci(self.baseline), bootstrap_ci(self.current)

    @property
    def disjoint(self) -> bool:
        (b_low, b_high), (c_low, c_high) = self.intervals
        return b_high < c_low or c_high < b_low

    @property
    def significance(self) -> str:
        """'' if not significant; else what made it so."""
        if self.p_value < self.alpha:
            return f"p={self.p_value:.2g}"
        if self.disjoint:
            return "bootstrap 95% intervals disjoint"
        return ""

    @property
    def verdict(self) -> str:
        if abs(self.change) <= self.threshold:
            return UNCHANGED
        if not self.significance:
            return NOT_SIGNIFICANT
        better = (self.change > 0) == self.higher_is_better
        return IMPROVEMENT if better else REGRESSION

    def sentence(self) -> str:
        """`packing/bucket on cpu: tokens_per_s fell 12.3% (48,210 -> 42,280), p=0.01`"""
        moved = "rose" if self.change > 0 else "fell"
        return (f"{self.group}: {self.metric} {moved} {abs(self.change):.1%} "
                f"({_fmt(self.base_median, self.unit)} -> {_fmt(self.current_median, self.unit)}), "
                f"{self.significance}")


@dataclass
class Comparison:
    changes: list[MetricChange]
    only_baseline: list[str] = field(default_factory=list)  # groups the current set lacks
    only_current: list[str] = field(default_factory=list)
    config_changed: list[str] = field(default_factory=list)  # groups whose suite hash differs
    few_runs: list[str] = field(default_factory=list)  # groups with fewer than 4 runs on a side

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == REGRESSION]

    @property
    def has_regression(self) -> bool:
        return bool(self.regressions)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "group": c.group, "metric": c.metric,
            "runs": f"{len(c.baseline)} / {len(c.current)}",
            "baseline": _fmt(c.base_median, c.unit), "current": _fmt(c.current_median, c.unit),
            "change": f"{c.change:+.1%}", "p": f"{c.p_value:.2g}",
            "intervals": "disjoint" if c.disjoint else "overlap", "verdict": c.verdict,
        } for c in self.changes])

    def notes(self) -> list[str]:
        notes = [f"{g}: only in the baseline" for g in self.only_baseline]
        notes += [f"{g}: only in the current set" for g in self.only_current]
        notes += [f"{g}: the suite's configuration differs between the two sets" for g in self.config_changed]
        notes += [f"{g}: fewer than 4 runs on a side; Mann-Whitney cannot reach p < 0.05, so only disjoint "
                  "intervals can flag a change" for g in self.few_runs]
        return notes


def compare_results(baseline: Iterable[str | Path], current: Iterable[str | Path], threshold: float = THRESHOLD,
                    alpha: float = ALPHA) -> Comparison:
    base_rows = _ok_rows(baseline)
    cur_rows = _ok_rows(current)
    keys = ["suite", "strategy", "device"]
    base_groups = dict(iter(base_rows.groupby(keys, sort=True)))
    cur_groups = dict(iter(cur_rows.groupby(keys, sort=True)))
    result = Comparison(changes=[])
    for key in sorted(base_groups.keys() | cur_groups.keys()):
        name = f"{key[0]}/{key[1]} on {key[2]}"
        if key not in cur_groups:
            result.only_baseline.append(name)
            continue
        if key not in base_groups:
            result.only_current.append(name)
            continue
        b, c = base_groups[key], cur_groups[key]
        if set(b["suite_hash"]) != set(c["suite_hash"]):
            result.config_changed.append(name)
        if min(len(b), len(c)) < 4:
            result.few_runs.append(name)
        for metric, higher, unit in METRICS:
            if metric not in b or metric not in c:
                continue
            bv, cv = _values(b[metric]), _values(c[metric])
            if bv and cv:
                result.changes.append(MetricChange(*key, metric, higher, unit, bv, cv, threshold, alpha))
    return result


def _ok_rows(paths: Iterable[str | Path]) -> pd.DataFrame:
    rows = storage.load_rows(list(paths)).rows
    return rows[rows["status"] == "ok"]


def _values(column: pd.Series) -> list[float]:
    return [float(v) for v in pd.to_numeric(column, errors="coerce").dropna()]


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:,.1f} MiB"
    if unit == "fraction":
        return f"{value:.3f}"
    if unit == "seconds":
        return f"{value:.2f} s"
    return f"{value:,.0f}"
