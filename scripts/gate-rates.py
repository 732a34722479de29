"""compare's gate on real reruns: every ordered pair of real invocations of one suite (same code, same machine),
cut to SEEDS seeds a side, compared as they are (A/A: how often unchanged code fails) and with the current side
made SLOWDOWN slower (A/B: how often a real slowdown is found). The noise is the runs' own; only the slowdown
is applied, to tokens/s, its windows and the times to target.

Usage: .venv/bin/python scripts/gate-rates.py [--seeds 4] [--slowdown 0.2] FOLDER FOLDER [FOLDER ...]
"""
from __future__ import annotations

import argparse
import itertools

import pandas as pd

from lstmbench.errors import ResultsError
from lstmbench.results import storage
from lstmbench.results.compare import compare_frames


def slowed(rows: pd.DataFrame, slowdown: float) -> pd.DataFrame:
    factor = 1 - slowdown
    out = rows.copy()
    out["tokens_per_s"] = out["tokens_per_s"] * factor
    out["window_tokens_per_s"] = [[w * factor for w in ws] if isinstance(ws, list) else ws
                                  for ws in out["window_tokens_per_s"]]
    for column in ("time_to_target_s", "time_to_target_robust_s"):
        if column in out:
            out[column] = out[column] / factor
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--seeds", type=int, default=4)  # the nightly suite's (suites/gpu.yaml)
    parser.add_argument("--slowdown", type=float, default=0.2)
    args = parser.parse_args()
    sets = []
    for folder in args.folders:
        rows = storage.load_rows([folder]).rows
        sets.append(rows[rows["seed"] < args.seeds].reset_index(drop=True))
    pairs = list(itertools.permutations(range(len(sets)), 2))
    outcome = {"A/A": [], "A/B": []}
    for i, j in pairs:
        for kind, current in (("A/A", sets[j]), ("A/B", slowed(sets[j], args.slowdown))):
            try:
                result = compare_frames(sets[i], current)
            except ResultsError as e:
                print(f"{kind} {i}->{j}: {e}")
                continue
            failed = result.has_regression
            found = sorted({c.group.split(" on ")[0] for c in result.regressions})
            outcome[kind].append(failed)
            print(f"{kind} {i}->{j}: {'FAIL' if failed else 'pass'} {', '.join(found)}"
                  f"{' (too busy: ' + str(len(result.too_busy)) + ')' if result.too_busy else ''}")
    for kind, fails in outcome.items():
        print(f"{kind}: {sum(fails)} of {len(fails)} comparisons failed ({sum(fails) / max(len(fails), 1):.0%}); "
              f"{len(sets)} invocations, {args.seeds} seeds a side"
              + (f", current {args.slowdown:.0%} slower" if kind == "A/B" else ""))


if __name__ == "__main__":
    main()
