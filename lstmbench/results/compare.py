"""Compare: a baseline result set against a current one -> verdicts, regression sentences, an exit code.

The gate controls its false-alarm rate over the whole comparison:
- Gated metrics: throughput and time to target (primary), training memory (memory: `train_mem_bytes`, or for
  rows before schema 4 the peak, `peak_mem_bytes`). Each is tested one-sided, in
  its own wrong direction, with a t-test on logarithms: paired by seed where both sets ran the seed (for
  throughput, each seed's log ratio is the median over its aligned windows of training steps, which shrugs
  off a disturbance that hit part of a run), else Welch's test. Benjamini-Hochberg's correction runs over
  every gated test of the comparison at one `alpha`: when nothing changed, the chance that the comparison
  raises any alarm is at most alpha (as with Holm's); when a change slows many strategies at once, it is found
  far more often than by Holm's. A regression also needs the change to exceed `threshold`.
- Quality: accuracy is deterministic for a seed on CPU, so it gets an absolute tolerance, not a test.
- No blind spots: a strategy that ran in the baseline and has no ok run now, or whose runs no longer reach the
  target, is a regression of its own.
- Groups are (suite, strategy, device, sweep point / DDP size, hardware, torch/CUDA/cuDNN): rows measured
  on other hardware or another numerical stack are never compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..errors import ResultsError
from ..measure import busy_warning, split_disturbed
from ..stats import benjamini_hochberg, log_ratio_test
from . import storage
from .rows import hardware, software, variant_of

THRESHOLD = 0.05  # 5%: asv's step-detection default; smaller changes are machine noise on shared runners
GATE_ALPHA = 0.02  # the false-alarm rate of a whole comparison of unchanged code (BH over all its gated tests): a
# nightly gate that fails one night in 50 without cause; at 0.05 one in 20 gets it switched off
MIN_RUNS = 3  # a test needs 3 seeds a side (paired: 2 degrees of freedom); with 2 nothing is tested
ACCURACY_TOLERANCE = 0.01  # absolute: one point of held-out accuracy; the same seed, data and code give the
# same accuracy on CPU (a difference of 0), and GPU nondeterminism moves it by a few thousandths


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    unit: str  # how a value is printed: count | bytes | fraction | seconds | ratio
    family: str  # primary | memory (gated, tested) | quality (absolute tolerance) | secondary (reported)


METRICS: tuple[Metric, ...] = (
    Metric("tokens_per_s", True, "count", "primary"),  # samples_per_s is the same quantity: not tested twice
    Metric("time_to_target_s", False, "seconds", "primary"),  # over the seeds that reached it on both sides
    Metric("train_mem_bytes", False, "bytes", "memory"),  # training's tensors (schema 4 on)
    Metric("peak_mem_bytes", False, "bytes", "memory"),  # tested only where train_mem_bytes cannot be
    Metric("eval_accuracy", True, "fraction", "quality"),
    Metric("eval_accuracy_exact", True, "fraction", "quality"),
    Metric("efficiency", True, "ratio", "secondary"),
)
GATED = ("primary", "memory")
# the schema versions at which a metric's meaning changed (record.SCHEMA_VERSION's notes): rows on the two sides
# of one measure different things, and are never compared (3: steady-state training time; 4: training memory,
# peaks without evaluations; 5: the exact accuracy's path; 2 and 5: what efficiency divides by)
MEANING_CHANGED = {"tokens_per_s": (3,), "time_to_target_s": (3,), "train_mem_bytes": (4,), "peak_mem_bytes": (4,),
                   "eval_accuracy_exact": (5,), "efficiency": (2, 5)}
REGRESSION, IMPROVEMENT, NOT_SIGNIFICANT, UNCHANGED = "regression", "improvement", "not significant", "unchanged"
TOO_FEW, REPORTED = "too few runs", "reported"
KEYS = ["suite", "strategy", "device", "variant", "platform"]


@dataclass
class MetricChange:
    group: str
    metric: Metric
    baseline: dict[tuple[int, int], float]  # (seed, k-th run of it) -> the run's value
    current: dict[tuple[int, int], float]
    log_ratios: list[float]  # one per seed both sets ran (throughput: median over aligned windows); [] if none
    threshold: float
    alpha: float
    p_value: float = math.nan  # one-sided, in the metric's wrong direction; nan when not tested
    p_adjusted: float = math.nan  # Benjamini-Hochberg-adjusted over the comparison's gated tests
    tests: int = 0  # how many gated tests the adjustment was over

    @property
    def paired(self) -> bool:
        return len(self.log_ratios) >= MIN_RUNS

    @property
    def testable(self) -> bool:
        return self.metric.family in GATED and (self.paired or min(len(self.baseline), len(self.current)) >= MIN_RUNS)

    @property
    def base_median(self) -> float:
        return float(np.median(list(self.baseline.values())))

    @property
    def current_median(self) -> float:
        return float(np.median(list(self.current.values())))

    @property
    def change(self) -> float:
        """Relative change: the geometric mean of the per-seed ratios when paired, else of the medians
        (quality: the absolute change of the median)."""
        if self.metric.family == "quality":
            return self.current_median - self.base_median
        if self.paired:
            return math.expm1(float(np.mean(self.log_ratios)))
        if self.base_median == 0:
            return 0.0 if self.current_median == 0 else math.copysign(math.inf, self.current_median)
        return self.current_median / self.base_median - 1

    @property
    def worse(self) -> bool:
        return (self.change < 0) == self.metric.higher_is_better and self.change != 0

    @property
    def verdict(self) -> str:
        if self.metric.family == "secondary":
            return REPORTED
        if self.metric.family == "quality":
            if abs(self.change) <= ACCURACY_TOLERANCE:
                return UNCHANGED
            return REGRESSION if self.worse else IMPROVEMENT
        if not self.testable:
            return TOO_FEW
        if abs(self.change) <= self.threshold:
            return UNCHANGED
        if self.worse:
            return REGRESSION if self.p_adjusted < self.alpha else NOT_SIGNIFICANT
        # improvements fail nothing; Bonferroni over the same tests keeps them at least as strict as regressions
        better_p = 1 - self.p_value
        return IMPROVEMENT if better_p * max(self.tests, 1) < self.alpha else NOT_SIGNIFICANT

    def sentence(self) -> str:
        """`packing/bucket on cpu (...): tokens_per_s fell 12.3% (48,210 -> 42,280), p=0.0004 after BH over 14
        tests (paired over 4 seeds)`"""
        if self.metric.family == "quality":
            moved = "rose" if self.change > 0 else "fell"
            return (f"{self.group}: {self.metric.name} {moved} by {abs(self.change):.3f} "
                    f"({self.base_median:.3f} -> {self.current_median:.3f}), more than the tolerance "
                    f"{ACCURACY_TOLERANCE:g}")
        moved = "rose" if self.change > 0 else "fell"
        how = f"paired over {len(self.log_ratios)} seeds" if self.paired else "unpaired"
        return (f"{self.group}: {self.metric.name} {moved} {abs(self.change):.1%} "
                f"({_fmt(self.base_median, self.metric.unit)} -> {_fmt(self.current_median, self.metric.unit)}), "
                f"p={self.p_adjusted:.2g} after BH over {self.tests} tests ({how})")


@dataclass
class Comparison:
    changes: list[MetricChange]
    lost: list[str] = field(default_factory=list)  # regressions without a metric: no ok run now, target missed
    only_baseline: list[str] = field(default_factory=list)  # groups the current set did not measure at all
    only_current: list[str] = field(default_factory=list)
    config_changed: list[str] = field(default_factory=list)  # groups whose suite hash differs
    few_runs: list[str] = field(default_factory=list)  # groups where nothing can be tested
    skipped: list[str] = field(default_factory=list)  # unreadable lines in either set (a run torn while writing)
    threshold: float = THRESHOLD
    alpha: float = GATE_ALPHA
    hashes: dict[str, tuple[str, str]] = field(default_factory=dict)  # group -> (baseline, current) suite hashes
    disturbed: list[tuple[str, str, int, str]] = field(default_factory=list)  # runs left out, measured on a busy
    # machine: (side, strategy, seed, machine.busy_warning of the run)
    ok_runs: dict[str, int] = field(default_factory=dict)  # side -> its ok runs, those left out included
    too_busy: list[str] = field(default_factory=list)  # groups left without a test by those left out
    # group -> (metrics not compared, baseline schemas, current schemas): their figures mean different things
    incomparable: dict[str, tuple[list[str], list[int], list[int]]] = field(default_factory=dict)

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == REGRESSION]

    @property
    def has_regression(self) -> bool:
        return bool(self.regressions or self.lost)

    @property
    def tests(self) -> int:
        return sum(c.testable for c in self.changes)

    def design(self) -> str:
        """What the gate tested and the false-alarm rate it is built for."""
        by = {f: sum(c.testable and c.metric.family == f for c in self.changes) for f in GATED}
        quality = sum(c.metric.family == "quality" for c in self.changes)
        return (f"{self.tests} tests ({by['primary']} of throughput and time to target, {by['memory']} of memory), "
                f"corrected together (Benjamini-Hochberg): a comparison of unchanged code fails with probability at "
                f"most {self.alpha:g}; a regression must also exceed {self.threshold:.0%}. tokens/s changes are "
                f"paired by seed (the median of each seed's window ratios). {quality} accuracy checks with an "
                f"absolute tolerance of {ACCURACY_TOLERANCE:g}; efficiency reported, not gated.")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "group": c.group, "metric": c.metric.name,
            "runs": f"{len(c.baseline)} / {len(c.current)}" + (" paired" if c.paired else ""),
            "baseline": _fmt(c.base_median, c.metric.unit), "current": _fmt(c.current_median, c.metric.unit),
            # what is tested (paired: the mean of the per-seed log ratios) beside the change of the medians
            # printed left of it, which can differ (a seed slowed by much moves one but not the other)
            "change, tested": f"{c.change:+.3f}" if c.metric.family == "quality" else f"{c.change:+.1%}",
            "change of medians": f"{c.current_median - c.base_median:+.3f}" if c.metric.family == "quality"
            else f"{c.current_median / c.base_median - 1:+.1%}" if c.base_median else "-",
            "p (BH)": "-" if math.isnan(c.p_adjusted) else f"{c.p_adjusted:.2g}",
            "verdict": c.verdict,
        } for c in self.changes])

    def notes(self) -> list[str]:
        notes = [f"{g}: only in the baseline, and the current set has no run on that hardware and stack"
                 for g in self.only_baseline]
        notes += [f"{g}: only in the current set" for g in self.only_current]
        notes += [f"{g}: the suite's configuration differs between the two sets (baseline {self.hashes[g][0]}, "
                  f"current {self.hashes[g][1]}): a change may come from the suite, not the code"
                  for g in self.config_changed]
        return notes

    def warnings(self) -> list[str]:
        """What limits the verdicts: runs left out as disturbed, runs too few to test, lines that could not be
        read."""
        left = []
        for side in ("baseline", "current"):
            mine = [(name, seed, why) for s, name, seed, why in self.disturbed if s == side]
            if mine:
                seeds: dict[str, list[int]] = {}
                for name, seed, _ in mine:
                    seeds.setdefault(name, []).append(seed)
                runs = "; ".join(f"{n} seed{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(v)))}"
                                 for n, v in seeds.items())
                left.append(f"{side}: {len(mine)} of {self.ok_runs.get(side, len(mine))} runs left out, measured "
                            f"while other processes took the CPU (their timings would measure the load): {runs}; "
                            f"the first: {mine[0][0]} seed {mine[0][1]}: {mine[0][2]}")
        busy = [f"no verdict for {len(self.too_busy)} group(s), too few of their runs measured on a quiet machine: "
                f"{', '.join(g.split(' on ')[0] for g in self.too_busy)}; run that side again on a quiet machine "
                "(`lstmbench run SUITE --resume --out FOLDER` measures the left-out runs again)"
                ] if self.too_busy else []
        alike: dict[tuple, list[str]] = {}  # one sentence per (metrics, schemas), naming its groups
        for g, (metrics, bv, cv) in self.incomparable.items():
            alike.setdefault((tuple(metrics), tuple(bv), tuple(cv)), []).append(g.split(" on ")[0])
        other = [f"{', '.join(metrics)} not compared in {len(groups)} group(s) ({', '.join(groups)}): the "
                 f"baseline's rows are schema {'/'.join(map(str, bv))} and the current's {'/'.join(map(str, cv))}, "
                 "and these figures changed meaning between them (docs/schema.md); measure the baseline again"
                 for (metrics, bv, cv), groups in alike.items()]
        return list(self.skipped) + left + busy + other + [
            f"{g}: fewer than {MIN_RUNS} runs on a side; its changes are shown but not tested" for g in self.few_runs
            if g not in self.too_busy]


def compare_results(baseline: str | Path | Iterable[str | Path], current: str | Path | Iterable[str | Path],
                    threshold: float = THRESHOLD, alpha: float = GATE_ALPHA) -> Comparison:
    """Compare per group; raises ResultsError for unreadable or empty sets, or when nothing can be tested."""
    if not (threshold >= 0 and 0 < alpha < 1):
        raise ResultsError(f"threshold must be >= 0 and alpha between 0 and 1, got {threshold} and {alpha}")
    skipped: list[str] = []
    base_all = _rows("baseline", baseline, skipped)
    cur_all = _rows("current", current, skipped)
    result = compare_frames(base_all, cur_all, threshold, alpha, f"{_names(baseline)} and {_names(current)}")
    result.skipped = skipped + result.skipped
    return result


def compare_frames(base_all: pd.DataFrame, cur_all: pd.DataFrame, threshold: float = THRESHOLD,
                   alpha: float = GATE_ALPHA, where: str = "the two sets") -> Comparison:
    """The comparison of two sets of rows already loaded (`_rows` adds `variant` and `platform`)."""
    result = Comparison(changes=[], threshold=threshold, alpha=alpha)
    base_all, cur_all = _keyed(base_all), _keyed(cur_all)
    base_ok, base_busy = split_disturbed(base_all[base_all["status"] == "ok"])
    cur_ok, cur_busy = split_disturbed(cur_all[cur_all["status"] == "ok"])
    base_ok, cur_ok = _runs(base_ok), _runs(cur_ok)
    result.disturbed = [(side, str(r["strategy"]), int(r["seed"]), busy_warning(r["env"]))
                        for side, busy in (("baseline", base_busy), ("current", cur_busy))
                        for r in busy.to_dict("records")]
    result.ok_runs = {"baseline": len(base_ok) + len(base_busy), "current": len(cur_ok) + len(cur_busy)}
    busy_groups = set(_group_keys(base_busy)) | set(_group_keys(cur_busy))
    base_groups = dict(iter(base_ok.groupby(KEYS, sort=True)))
    cur_groups = dict(iter(cur_ok.groupby(KEYS, sort=True)))
    measured = {(r["suite"], r["device"], r["platform"]) for r in cur_all.to_dict("records")}
    for key in sorted(base_groups.keys() | cur_groups.keys()):
        name = _name(key)
        if key not in base_groups:
            result.only_current.append(name)
            continue
        if key not in cur_groups:
            if key in busy_groups:  # ran, but only on a busy machine: no verdict, not a loss
                result.too_busy.append(name)
                continue
            if (key[0], key[2], key[4]) in measured:  # the current set ran this suite here: the strategy is lost
                failed = cur_all[(cur_all[KEYS] == pd.Series(key, index=KEYS)).all(axis=1)]
                why = (f"{len(failed)} failed ({', '.join(sorted(set(failed['status'])))})" if len(failed)
                       else "no run at all")
                result.lost.append(f"{name}: {len(base_groups[key])} ok run(s) in the baseline, none now: {why}")
            else:
                result.only_baseline.append(name)
            continue
        b, c = base_groups[key], cur_groups[key]
        result.hashes[name] = (_hashes(b), _hashes(c))
        if result.hashes[name][0] != result.hashes[name][1]:
            result.config_changed.append(name)
        result.lost += _target_lost(name, b, c)
        for metric in METRICS:
            on_both = all(metric.name in side and side[metric.name].notna().any() for side in (b, c))
            if on_both and not _same_meaning(metric.name, b, c):
                versions = (sorted(set(map(int, b["schema_version"]))), sorted(set(map(int, c["schema_version"]))))
                result.incomparable.setdefault(name, ([], *versions))[0].append(metric.name)
                continue
            change = _change(name, metric, b, c, threshold, alpha)
            if change is not None and not (metric.name == "peak_mem_bytes" and result.changes
                                           and result.changes[-1].metric.name == "train_mem_bytes"
                                           and result.changes[-1].group == name):
                result.changes.append(change)
    _adjust(result.changes)
    result.few_runs = sorted({c.group for c in result.changes if c.metric.family in GATED and not c.testable})
    result.too_busy = sorted(set(result.too_busy) | {g for g in result.few_runs
                                                     if g in {_name(k) for k in busy_groups}})
    if (result.too_busy or result.incomparable) and not result.tests and not result.lost:
        return result  # nothing testable is left once the busy runs or other schemas are out: exit 2
    if not result.changes and not result.lost:
        raise ResultsError(f"nothing to compare: no group (suite, strategy, device, hardware, torch) has "
                           f"successful runs in both {where}")
    if not result.tests and not result.lost:
        most = max(min(len(c.baseline), len(c.current)) for c in result.changes)
        raise ResultsError(f"too few runs to test anything: at most {most} seed(s) a side, and a test needs "
                           f"{MIN_RUNS}; a 20% slowdown is found 19 times in 20 with 4 seeds a side on a quiet "
                           f"machine (docs/commands.md, the gate's rates), so run both sets with "
                           f"--set 'seeds=[0,1,2,3]'")
    return result


def _same_meaning(metric: str, b: pd.DataFrame, c: pd.DataFrame) -> bool:
    """Whether every row of both sides measured `metric` in one sense (no MEANING_CHANGED version between them)."""
    changed = MEANING_CHANGED.get(metric, ())
    eras = {sum(int(v) >= at for at in changed) for v in (*b["schema_version"], *c["schema_version"])}
    return len(eras) <= 1


def _change(name: str, metric: Metric, b: pd.DataFrame, c: pd.DataFrame, threshold: float,
            alpha: float) -> MetricChange | None:
    if metric.name not in b or metric.name not in c:
        return None
    bv, cv = _by_seed(b, metric.name), _by_seed(c, metric.name)
    if metric.name == "time_to_target_s":  # only seeds that reached it on both sides; misses are `lost`
        both = bv.keys() & cv.keys()
        bv, cv = {s: v for s, v in bv.items() if s in both}, {s: v for s, v in cv.items() if s in both}
    if not bv or not cv:
        return None
    seeds = sorted(bv.keys() & cv.keys())
    ratios = []
    if metric.family != "quality" and all(v > 0 for v in [*bv.values(), *cv.values()]):
        windows = metric.name == "tokens_per_s"
        ratios = [_window_log_ratio(b, c, s) if windows else math.log(cv[s] / bv[s]) for s in seeds]
    return MetricChange(name, metric, bv, cv, ratios, threshold, alpha)


def _window_log_ratio(b: pd.DataFrame, c: pd.DataFrame, seed: tuple[int, int]) -> float:
    """A seed's log throughput ratio: the median over its windows (the same steps on both sides) of each
    window's log ratio; the ratio of the runs' throughputs when the windows do not line up."""
    bw, cw = _windows(b, seed), _windows(c, seed)
    if len(bw) == len(cw) and len(bw) > 0 and min(bw + cw) > 0:
        return float(np.median(np.log(np.asarray(cw)) - np.log(np.asarray(bw))))
    return math.log(_by_seed(c, "tokens_per_s")[seed] / _by_seed(b, "tokens_per_s")[seed])


def _windows(rows: pd.DataFrame, run: tuple[int, int]) -> list[float]:
    if "window_tokens_per_s" not in rows:
        return []
    w = rows.loc[[r == run for r in rows["run"]], "window_tokens_per_s"].iloc[0]
    return [float(x) for x in w] if isinstance(w, list) else []


def _adjust(changes: list[MetricChange]) -> None:
    """Test every gated change and adjust the p-values over all of them (Benjamini-Hochberg)."""
    tested = [c for c in changes if c.testable]
    for c in tested:
        if c.paired:
            c.p_value = log_ratio_test([1.0] * len(c.log_ratios), list(np.exp(c.log_ratios)), True,
                                       c.metric.higher_is_better)
        else:
            c.p_value = log_ratio_test(list(c.baseline.values()), list(c.current.values()), False,
                                       c.metric.higher_is_better)
    for c, p in zip(tested, benjamini_hochberg([c.p_value for c in tested])):
        c.p_adjusted, c.tests = p, len(tested)


def _target_lost(name: str, b: pd.DataFrame, c: pd.DataFrame) -> list[str]:
    """A sentence when seeds that reached the target in the baseline no longer do (or fewer runs do)."""
    if "time_to_target_s" not in b or "time_to_target_s" not in c or "target_accuracy" not in b:
        return []
    if not pd.to_numeric(b["target_accuracy"], errors="coerce").gt(0).any():
        return []
    reached_b, reached_c = set(_by_seed(b, "time_to_target_s")), set(_by_seed(c, "time_to_target_s"))
    ran_c = set(c["run"])
    missed = sorted(s for s, _ in reached_b & ran_c - reached_c)
    fewer = len(reached_c) / max(len(ran_c), 1) < len(reached_b) / max(len(b), 1)
    if not missed and not fewer:
        return []
    target = pd.to_numeric(b["target_accuracy"], errors="coerce").max()
    which = f"seed{'s' if len(missed) > 1 else ''} {', '.join(map(str, missed))}"
    seeds = f" ({which} no longer reach it)" if missed else ""
    return [f"{name}: reached accuracy {target:g} in {len(reached_b)} of {len(b)} runs in the baseline, "
            f"{len(reached_c)} of {len(c)} now{seeds}"]


def _group_keys(rows: pd.DataFrame) -> list[tuple]:
    return [tuple(r[k] for k in KEYS) for r in rows.to_dict("records")]


def _runs(rows: pd.DataFrame) -> pd.DataFrame:
    """Each run keyed (seed, k): the k-th run of that seed in its group, so a set holding a seed twice keeps both
    runs, and pairs them with the other set's runs of the same seed in order."""
    return rows.assign(run=list(zip(rows["seed"].astype(int), rows.groupby(KEYS + ["seed"]).cumcount())))


def _by_seed(rows: pd.DataFrame, column: str) -> dict[tuple[int, int], float]:
    values = pd.to_numeric(rows[column], errors="coerce")
    return {run: float(v) for run, v in zip(rows["run"], values) if np.isfinite(v)}


def _rows(side: str, paths: str | Path | Iterable[str | Path], skipped: list[str]) -> pd.DataFrame:
    loaded = storage.load_rows(_paths(paths))
    skipped += [f"{side}: {s}" for s in loaded.skipped]
    rows = loaded.rows
    if not (rows["status"] == "ok").any():  # storage checked every row's keys and types (rows.row_problem)
        raise ResultsError(f"{_names(paths)}: no successful run (status ok) among {len(rows)} rows")
    return rows


def _keyed(rows: pd.DataFrame) -> pd.DataFrame:
    """The grouping columns: the sweep point / DDP size, and the hardware and numerical stack."""
    envs = rows["env"] if "env" in rows else [{}] * len(rows)
    return rows.assign(variant=[_variant(r) for r in rows.to_dict("records")],
                       platform=[f"{hardware(e)}; {software(e)}" for e in envs])


def _name(key: tuple) -> str:
    suite, strategy, device, variant, platform = key
    return f"{suite}/{strategy} on {device}{variant} ({platform})"


def _variant(row: dict) -> str:
    parts = variant_of(row)
    return f" [{', '.join(parts)}]" if parts else ""


def _paths(paths: str | Path | Iterable[str | Path]) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def _names(paths: str | Path | Iterable[str | Path]) -> str:
    return ", ".join(map(str, _paths(paths)))


def _hashes(rows: pd.DataFrame) -> str:
    return "+".join(sorted(set(rows["suite_hash"].astype(str)))) if "suite_hash" in rows else "?"


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:,.1f} MiB"
    if unit == "fraction":
        return f"{value:.3f}"
    if unit == "seconds":
        return f"{value:.2f} s"
    if unit == "ratio":
        return f"{value:.0%}"
    return f"{value:,.0f}"
