"""Compare: a baseline result set against a current one -> per-metric verdicts and regression sentences.

A change is a regression only when it goes the wrong way, is larger than the threshold, and is
significant: a Mann-Whitney U test (asv's choice) below alpha, or disjoint 95% bootstrap intervals of
the medians. Each metric is judged in its own direction. Only rows with status "ok" count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import storage
from .errors import ResultsError
from .records import variant_of
from .stats import bootstrap_ci, mann_whitney

THRESHOLD = 0.05  # 5%: asv's step-detection default; smaller changes are machine noise on shared runners
ALPHA = 0.05  # two-sided; with 4+ runs a side Mann-Whitney can reach it, with 3 only disjoint intervals can
# Below 3 runs a side nothing is called significant: two values' percentile bootstrap interval of the median is
# their range, and two ranges drawn from one distribution are disjoint 1 time in 3 (with 3 a side: 1 in 10,
# the same as a one-sided Mann-Whitney at 0.05).
MIN_RUNS = 3

# metric, higher is better, how to print a value
METRICS: tuple[tuple[str, bool, str], ...] = (
    ("tokens_per_s", True, "count"),
    ("samples_per_s", True, "count"),
    ("peak_mem_bytes", False, "bytes"),
    ("eval_accuracy", True, "fraction"),
    ("eval_accuracy_exact", True, "fraction"),
    ("time_to_target_s", False, "seconds"),  # absent in older rows, null for runs that never reached the target
)
REGRESSION, IMPROVEMENT, NOT_SIGNIFICANT, UNCHANGED = "regression", "improvement", "not significant", "unchanged"
KEYS = ["suite", "strategy", "device", "variant"]  # variant: the sweep point and DDP world size, if any


@dataclass(frozen=True)
class MetricChange:
    suite: str
    strategy: str
    device: str
    variant: str  # '' or e.g. ' [launch.nproc=2, 2 ranks]': never compared with another variant
    metric: str
    higher_is_better: bool
    unit: str
    baseline: list[float]
    current: list[float]
    threshold: float
    alpha: float

    @property
    def group(self) -> str:
        return f"{self.suite}/{self.strategy} on {self.device}{self.variant}"

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
    def too_few_runs(self) -> bool:
        """Fewer than MIN_RUNS on a side: neither test is trusted, so nothing here is called significant."""
        return min(len(self.baseline), len(self.current)) < MIN_RUNS

    @cached_property
    def p_value(self) -> float:
        if np.ptp(self.baseline + self.current) == 0:
            return 1.0  # every value equal: nothing to test
        p = mann_whitney(self.baseline, self.current)
        return 1.0 if math.isnan(p) else p

    @cached_property
    def baseline_ci(self) -> tuple[float, float]:
        return bootstrap_ci(self.baseline)

    @cached_property
    def current_ci(self) -> tuple[float, float]:
        return bootstrap_ci(self.current)

    @property
    def intervals(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return self.baseline_ci, self.current_ci

    @property
    def disjoint(self) -> bool:
        (b_low, b_high), (c_low, c_high) = self.intervals
        return b_high < c_low or c_high < b_low

    @property
    def significant_by(self) -> str:
        """Which test made the change significant: 'Mann-Whitney p=0.01', 'bootstrap intervals disjoint' or ''."""
        if self.too_few_runs:
            return ""
        if self.p_value < self.alpha:
            return f"Mann-Whitney p={self.p_value:.2g}"
        if self.disjoint:
            return "bootstrap intervals disjoint"
        return ""

    @property
    def significance(self) -> str:
        """The end of the sentence: 'p=0.01', 'bootstrap 95% intervals disjoint', or '' if not significant."""
        by = self.significant_by
        if by.startswith("Mann-Whitney "):
            return by.removeprefix("Mann-Whitney ")
        return "bootstrap 95% intervals disjoint" if by else ""

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
    only_baseline: list[str] = field(default_factory=list)  # groups without an ok run in the current set
    only_current: list[str] = field(default_factory=list)
    config_changed: list[str] = field(default_factory=list)  # groups whose suite hash differs
    few_runs: list[str] = field(default_factory=list)  # groups where nothing can be called significant
    skipped: list[str] = field(default_factory=list)  # unreadable lines in either set (a run torn while writing)
    threshold: float = THRESHOLD
    alpha: float = ALPHA
    failed: dict[str, str] = field(default_factory=dict)  # group -> "3 failed run(s) (oom)" on the side lacking it
    hashes: dict[str, tuple[str, str]] = field(default_factory=dict)  # group -> (baseline, current) suite hashes

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
            "intervals": "disjoint" if c.disjoint else "overlap",
            "verdict": c.verdict + (" (too few runs)" if c.too_few_runs and abs(c.change) > c.threshold else ""),
        } for c in self.changes])

    def notes(self) -> list[str]:
        notes = [f"{g}: only in the baseline" + (f"; the current set has {self.failed[g]}" if g in self.failed
                                                  else "") for g in self.only_baseline]
        notes += [f"{g}: only in the current set" + (f"; the baseline has {self.failed[g]}" if g in self.failed
                                                      else "") for g in self.only_current]
        notes += [f"{g}: the suite's configuration differs between the two sets (baseline {self.hashes[g][0]}, "
                  f"current {self.hashes[g][1]}): a change may come from the suite, not the code"
                  for g in self.config_changed]
        return notes

    def warnings(self) -> list[str]:
        """What limits the verdicts: runs too few to test, lines that could not be read."""
        return list(self.skipped) + [
            f"{g}: fewer than {MIN_RUNS} runs on a side; its changes are shown but none is called significant "
            f"(use {MIN_RUNS} or more seeds, 4 or more for Mann-Whitney to reach p < 0.05)" for g in self.few_runs]


def compare_results(baseline: str | Path | Iterable[str | Path], current: str | Path | Iterable[str | Path],
                    threshold: float = THRESHOLD, alpha: float = ALPHA) -> Comparison:
    """Compare per (suite, strategy, device); raises ResultsError for unreadable or empty sets."""
    if not (threshold >= 0 and 0 < alpha < 1):
        raise ResultsError(f"threshold must be >= 0 and alpha between 0 and 1, got {threshold} and {alpha}")
    baseline, current = _paths(baseline), _paths(current)
    result = Comparison(changes=[], threshold=threshold, alpha=alpha)
    base_all = _rows("baseline", baseline, result.skipped)
    cur_all = _rows("current", current, result.skipped)
    base_rows, cur_rows = base_all[base_all["status"] == "ok"], cur_all[cur_all["status"] == "ok"]
    base_groups = dict(iter(base_rows.groupby(KEYS, sort=True)))
    cur_groups = dict(iter(cur_rows.groupby(KEYS, sort=True)))
    for key in sorted(base_groups.keys() | cur_groups.keys()):
        name = f"{key[0]}/{key[1]} on {key[2]}{key[3]}"
        if key not in cur_groups or key not in base_groups:
            side, other = (result.only_baseline, cur_all) if key not in cur_groups else (result.only_current, base_all)
            side.append(name)
            failed = other[(other[KEYS] == pd.Series(key, index=KEYS)).all(axis=1)]
            if len(failed):
                result.failed[name] = f"{len(failed)} failed run(s) ({', '.join(sorted(set(failed['status'])))})"
            continue
        b, c = base_groups[key], cur_groups[key]
        result.hashes[name] = (_hashes(b), _hashes(c))
        if result.hashes[name][0] != result.hashes[name][1]:
            result.config_changed.append(name)
        if min(len(b), len(c)) < MIN_RUNS:
            result.few_runs.append(name)
        for metric, higher, unit in METRICS:
            if metric not in b or metric not in c:
                continue
            bv, cv = _values(b[metric]), _values(c[metric])
            if bv and cv:
                result.changes.append(MetricChange(*key, metric, higher, unit, bv, cv, threshold, alpha))
    if not result.changes:
        raise ResultsError(f"nothing to compare: no (suite, strategy, device) has successful runs in both "
                           f"{_names(baseline)} and {_names(current)}")
    return result


def _rows(side: str, paths: str | Path | Iterable[str | Path], skipped: list[str]) -> pd.DataFrame:
    loaded = storage.load_rows(_paths(paths))
    skipped += [f"{side}: {s}" for s in loaded.skipped]
    rows = loaded.rows
    missing = [k for k in ["suite", "strategy", "device", "status"] if k not in rows]
    if missing:
        raise ResultsError(f"{_names(paths)}: result rows lack {', '.join(missing)}")
    if not (rows["status"] == "ok").any():
        raise ResultsError(f"{_names(paths)}: no successful run (status ok) among {len(rows)} rows")
    return rows.assign(variant=[_variant(r) for r in rows.to_dict("records")])


def _variant(row: dict) -> str:
    parts = variant_of(row)
    return f" [{', '.join(parts)}]" if parts else ""


def _paths(paths: str | Path | Iterable[str | Path]) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def _names(paths: str | Path | Iterable[str | Path]) -> str:
    return ", ".join(map(str, _paths(paths)))


def _hashes(rows: pd.DataFrame) -> str:
    return "+".join(sorted(set(rows["suite_hash"].astype(str)))) if "suite_hash" in rows else "?"


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
