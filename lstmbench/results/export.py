"""Export result rows in pytest-benchmark's JSON format, for tools that read it (`pytest-benchmark compare`,
github-action-benchmark, codspeed-style dashboards). Library code: returns the JSON-able dict; the CLI writes it.

One benchmark per (suite, strategy, device), named `<suite>/<strategy>[<device>]`. Its rounds are the `ok` runs
(one per seed, and per invocation when several result files hold the same seed), and each round's value is
that run's **mean step time** in seconds: `train_time_s / steps` (batch preparation, forward, backward and
optimizer update; warm-up and evaluation excluded). Lower is better, as pytest-benchmark assumes; `ops` is
then steps per second. The statistics are pytest-benchmark's own (same quartile and outlier rules), so its
tools show the same numbers they would for a benchmark they measured. Tokens/s, samples/s, peak memory and
the accuracies of each round go to `extra_info`, as lists in the order of `stats.data`.
"""
from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from ..errors import ResultsError
from ..version import __version__
from .rows import variant_of

FORMAT_VERSION = "5.1.0"  # the pytest-benchmark JSON layout this writes (unchanged from 3.x to 5.x)
GROUP_KEYS = ("suite", "strategy", "device")
REQUIRED = (*GROUP_KEYS, "status", "seed", "train_time_s", "steps")
EXTRA = ("tokens_per_s", "samples_per_s", "train_mem_bytes", "peak_mem_bytes", "eval_accuracy",
         "eval_accuracy_exact", "efficiency", "time_to_target_s")


def to_pytest_benchmark(rows: pd.DataFrame, source: str = "results") -> dict[str, Any]:
    """pytest-benchmark's JSON document for the `ok` rows of `rows` (as `storage.load_rows` gives them)."""
    ok = ok_rows(rows, REQUIRED, source)
    benchmarks = []
    for key, group in ok.groupby([*GROUP_KEYS, "variant"], sort=True):
        suite, strategy, device, variant = map(str, key)
        group = group.sort_values(["seed"], kind="stable")
        times, kept = [], []
        for i, r in enumerate(group.itertuples(index=False)):
            seconds, steps = _number(r.train_time_s), _number(r.steps)
            if seconds is None or steps is None or steps <= 0 or seconds < 0:
                continue
            times.append(seconds / steps)
            kept.append(i)
        if not times:
            raise ResultsError(f"{source}: {suite}/{strategy} on {device}: no ok row has train_time_s and steps")
        used = group.iloc[kept]
        benchmarks.append(_benchmark(suite, strategy, device, variant, times, used))
    return {
        "machine_info": _machine_info(ok),
        "commit_info": _commit_info(ok),
        "benchmarks": benchmarks,
        "datetime": datetime.now(timezone.utc).isoformat(),
        "version": FORMAT_VERSION,
    }


def ok_rows(rows: pd.DataFrame, required: tuple[str, ...], source: str) -> pd.DataFrame:
    """The ok rows to export, each with its `variant` (sweep point, DDP ranks); ResultsError when a required
    column is missing or no row is ok."""
    missing = [k for k in required if k not in rows.columns]
    if missing:
        raise ResultsError(f"{source}: result rows lack {', '.join(missing)}")
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        raise ResultsError(f"{source}: no ok result rows to export ({len(rows)} rows, none with status ok)")
    return ok.assign(variant=[", ".join(variant_of(r)) for r in ok.to_dict("records")])


def _benchmark(suite: str, strategy: str, device: str, variant: str, times: list[float],
               rows: pd.DataFrame) -> dict[str, Any]:
    extra: dict[str, Any] = {"unit": "seconds per training step (train_time_s / steps), one round per run",
                             "seeds": [int(s) for s in rows["seed"]],
                             "steps": [int(s) for s in rows["steps"]]}
    for column in EXTRA:
        if column in rows.columns:
            extra[column] = [_number(v) for v in rows[column]]
    if "suite_hash" in rows.columns:
        extra["suite_hash"] = sorted({str(h) for h in rows["suite_hash"]})
    where = f"{device}, {variant}" if variant else device  # a sweep point or DDP ranks: a benchmark of its own
    return {
        "group": suite,
        "name": f"{suite}/{strategy}[{where}]",
        "fullname": f"lstmbench::{suite}/{strategy}[{where}]",
        "params": {"strategy": strategy, "device": device, **({"variant": variant} if variant else {})},
        "param": f"{strategy}-{device}" + (f"-{variant}" if variant else ""),
        "extra_info": extra,
        "options": {"disable_gc": False, "timer": "lstmbench", "min_rounds": len(times), "max_time": None,
                    "min_time": None, "warmup": True},
        "stats": {**stats(times), "data": times, "iterations": 1},
    }


def stats(data: list[float]) -> dict[str, Any]:
    """pytest-benchmark's `Stats.as_dict()` for `data` (its definitions: quartiles by Wikipedia's methods 2
    and 3, Tukey fences at 1.5 IQR, outliers as 'stddev;iqr' counts)."""
    if not data:
        raise ValueError("no data")
    s = sorted(data)
    n = len(s)
    mean = statistics.mean(s)
    stddev = statistics.stdev(s) if n > 1 else 0
    if n == 1:
        q1 = q3 = s[0]
    elif n % 2:  # method 3
        k, r = n // 4, n % 4
        q1 = 0.25 * s[k - 1] + 0.75 * s[k] if r == 1 else 0.75 * s[k] + 0.25 * s[k + 1]
        q3 = 0.75 * s[3 * k] + 0.25 * s[3 * k + 1] if r == 1 else 0.25 * s[3 * k + 1] + 0.75 * s[3 * k + 2]
    else:  # method 2
        q1, q3 = statistics.median(s[:n // 2]), statistics.median(s[n // 2:])
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_outliers = sum(v < low or v > high for v in s)
    stddev_outliers = sum(v < mean - stddev or v > mean + stddev for v in s)
    total = sum(data)
    return {
        "min": s[0], "max": s[-1], "mean": mean, "stddev": stddev, "rounds": n,
        "median": statistics.median(s), "iqr": iqr, "q1": q1, "q3": q3,
        "iqr_outliers": iqr_outliers, "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}",
        "ld15iqr": s[0] if n == 1 else s[bisect_left(s, low)],
        "hd15iqr": s[0] if n == 1 else s[bisect_right(s, high) - 1],
        "ops": n / total if total else 0, "total": total,
    }


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _envs(rows: pd.DataFrame) -> list[dict[str, Any]]:
    if "env" not in rows.columns:
        return []
    return [e for e in rows["env"] if isinstance(e, dict)]


def _common(envs: list[dict[str, Any]], key: str) -> Any:
    values = {str(e.get(key)) for e in envs if e.get(key) is not None}
    return values.pop() if len(values) == 1 else (", ".join(sorted(values)) if values else None)


def _machine_info(rows: pd.DataFrame) -> dict[str, Any]:
    """Where the rows were measured (from their `env`), not where the export ran."""
    envs = _envs(rows)
    hosts = _common(envs, "host")
    return {
        "node": hosts or "unknown",
        "processor": _common(envs, "cpu") or "",
        "machine": "",
        "python_implementation": "CPython",
        "python_version": _common(envs, "python") or "",
        "python_compiler": "",
        "release": "",
        "system": _common(envs, "platform") or "",
        "cpu": {"brand_raw": _common(envs, "cpu") or "", "count": _common(envs, "cpu_count")},
        "device_name": _common(envs, "device_name"),
        "torch": _common(envs, "torch"),
        "lstmbench": _common(envs, "lstmbench") or __version__,
        "exported_by": f"lstmbench {__version__}",
    }


def _commit_info(rows: pd.DataFrame) -> dict[str, Any]:
    commits = {str(e["git_commit"]) for e in _envs(rows) if e.get("git_commit")}
    commit = commits.pop() if len(commits) == 1 else None
    dirty = bool(commit and commit.endswith("-dirty"))
    return {
        "id": (commit.removesuffix("-dirty") if commit else None) or ("several" if commits else "unversioned"),
        "time": None,
        "author_time": None,
        "dirty": dirty,
        "project": "lstmbench",
        "branch": "(unknown)",
    }
