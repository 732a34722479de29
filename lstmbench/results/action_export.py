"""Export result rows for github-action-benchmark's custom tools, so a repository charts nightly figures per
strategy on GitHub Pages (and alerts on a drop) with that action. Library code: returns JSON-able lists.

The action reads a JSON array of `{name, unit, value, range?, extra?}` (value a number, the rest strings):
- `customBiggerIsBetter` (`bigger`): tokens/s, the median over the `ok` runs of one (suite, strategy, device,
  variant): real tokens per second of training, comparable across strategies whose steps carry different
  numbers of tokens (a step time is not);
- `customSmallerIsBetter` (`smaller`): time to the target accuracy (median training seconds, only where most
  runs reached it: a miss has no finite value to chart) and training memory (MiB, the median of
  `train_mem_bytes`).
`range` gives the runs' spread ("min-max over N runs"); `extra` the seeds, commit, torch and device.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ResultsError
from .export import ok_rows

KINDS = {"bigger": "customBiggerIsBetter", "smaller": "customSmallerIsBetter"}
GROUP = ("suite", "strategy", "device")


def to_action_benchmark(rows: pd.DataFrame, kind: str, source: str = "results") -> list[dict[str, Any]]:
    """The action's entries for the ok rows of `rows` (as storage.load_rows gives them). `kind`: bigger | smaller."""
    if kind not in KINDS:
        raise ResultsError(f"unknown kind {kind!r}: bigger or smaller")
    ok = ok_rows(rows, (*GROUP, "status", "seed", "tokens_per_s"), source)
    entries: list[dict[str, Any]] = []
    for key, group in ok.groupby([*GROUP, "variant"], sort=True):
        suite, strategy, device, variant = map(str, key)
        name = f"{suite}/{strategy} [{device}{', ' + variant if variant else ''}]"
        extra = _extra(group)
        if kind == "bigger":
            entries += _entry(f"{name} tokens/s", "tokens/s", _values(group, "tokens_per_s"), extra, 0)
            continue
        times = _values(group, "time_to_target_s", missed_as_inf=True)
        if len(times) and math.isfinite(float(np.median(times))):  # most runs reached it: a finite median
            target = _values(group, "target_accuracy")
            label = f" {target[0]:g}" if len(target) else ""
            entries += _entry(f"{name} time to target{label}", "s", times, extra, 2)
        memory = _values(group, "train_mem_bytes") / 2**20
        entries += _entry(f"{name} train memory", "MiB", memory, extra, 1)
    if not entries:
        raise ResultsError(f"{source}: no ok row carries a figure to export as {KINDS[kind]}")
    return entries


def _values(group: pd.DataFrame, column: str, missed_as_inf: bool = False) -> np.ndarray:
    """The column's finite numbers; with missed_as_inf, a run with a target that never reached it as inf."""
    if column not in group.columns:
        return np.array([])
    values = pd.to_numeric(group[column], errors="coerce").to_numpy(float)
    if missed_as_inf and "target_accuracy" in group.columns:
        aimed = pd.to_numeric(group["target_accuracy"], errors="coerce").notna().to_numpy()
        values = np.where(aimed & np.isnan(values), np.inf, values)[aimed]
    return values[~np.isnan(values)]


def _entry(name: str, unit: str, values: np.ndarray, extra: str, digits: int) -> list[dict[str, Any]]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    spread = (f"{finite.min():,.{digits}f}-{finite.max():,.{digits}f} over {len(values)} runs"
              + (f" ({len(values) - len(finite)} never)" if len(finite) < len(values) else ""))
    return [{"name": name, "unit": unit, "value": round(float(np.median(values)), digits + 2), "range": spread,
             "extra": extra}]


def _extra(group: pd.DataFrame) -> str:
    seeds = ", ".join(str(int(s)) for s in sorted(set(group["seed"])))
    envs = [e for e in group["env"] if isinstance(e, dict)] if "env" in group.columns else []
    lines = [f"seeds: {seeds}"]
    for key, label in (("git_commit", "lstmbench commit"), ("torch", "torch"), ("device_name", "device"),
                       ("cpu", "cpu")):
        values = sorted({str(e[key]) for e in envs if e.get(key)})
        if values:
            lines.append(f"{label}: {', '.join(v[:12] if key == 'git_commit' else v for v in values)}")
    if "suite_hash" in group.columns:
        lines.append(f"configuration: {', '.join(sorted({str(h) for h in group['suite_hash']}))}")
    return "\n".join(lines)
