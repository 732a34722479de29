"""Quality: does a strategy lose accuracy? Strategies of one seed share initial weights and data, so their
accuracies pair by seed. Each strategy is compared with the best exact one (the exact strategy of highest
mean accuracy through its own path), on accuracy and on reaching the target, by a permutation test that
accounts for having picked the best from the same runs (stats.below_best). The two families together keep the
chance that a section marks any strategy below the best by accident at QUALITY_ALPHA (Bonferroni over the two).
Where the test cannot decide, the seeds it would need are estimated."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..stats import below_best, seeds_needed
from .verdicts import Accuracy, Computes, Verdict

QUALITY_ALPHA = 0.05  # the chance that a section marks any strategy below the best by accident


def accuracy_verdicts(ok: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Verdict]:
    """strategy -> its verdict against the best exact strategy (an Accuracy, with the report's sentence)."""
    has = summary[summary["eval_accuracy"].notna()]
    names = list(has["strategy"])
    exact = (has["computes_kind"] == Computes.EXACT).to_numpy()
    if not exact.any():
        return {}
    runs = ok[ok["strategy"].isin(names)].drop_duplicates(["strategy", "seed"], keep="last")  # a seed run twice
    acc = runs.pivot(index="seed", columns="strategy", values="eval_accuracy").reindex(columns=names).dropna()
    if len(acc) < 2:
        best = names[int(np.argmax(np.where(exact, has["eval_accuracy"], -np.inf)))]
        top = has.set_index("strategy").at[best, "eval_accuracy"]
        return {best: Verdict(Accuracy.BEST, "best exact"),
                **{n: Verdict(Accuracy.UNTESTED, f"{-(top - a):+.3f} ({len(acc)} seed in common: no test)")
                   for n, a in zip(names, has["eval_accuracy"]) if n != best}}
    families = [acc.to_numpy(float)]
    reached = None
    if "target_accuracy" in runs and runs["target_accuracy"].notna().any() and "time_to_target_s" in runs:
        hit = runs.assign(hit=runs["time_to_target_s"].notna().astype(float))
        reached = hit.pivot(index="seed", columns="strategy", values="hit").reindex(columns=names).loc[acc.index]
        families.append(reached.to_numpy(float))
    alpha = QUALITY_ALPHA / len(families)
    best, short, p = below_best(families[0], exact)
    p_hit = below_best(families[1], exact)[2] if reached is not None else np.ones(len(names))
    out = {names[best]: Verdict(Accuracy.BEST, "best exact")}
    k = len(names)
    for j, name in enumerate(names):
        if j == best:
            continue
        note = ""
        if reached is not None and reached[name].sum() != reached[names[best]].sum():
            note = f"; target {int(reached[name].sum())}/{len(acc)} vs {int(reached[names[best]].sum())}/{len(acc)}"
            if p_hit[j] < alpha:
                note += f" (fewer, p={p_hit[j]:.2g})"
        if p[j] < alpha:
            out[name] = Verdict(Accuracy.BELOW, f"below: {-short[j]:+.3f}, p={p[j]:.2g}{note}")
            continue
        if short[j] <= 0:
            out[name] = Verdict(Accuracy.NO_SHORTFALL, f"{max(0.0, -short[j]):+.3f} (no shortfall){note}")  # no -0.000
            continue
        need = _seeds_to_decide(acc[names[best]] - acc[name], k, alpha)
        why = f"~{need} seeds would decide" if need else "more than 1000 seeds would decide"
        out[name] = Verdict(Accuracy.UNDECIDED, f"{-short[j]:+.3f}, p={p[j]:.2g} (n.s.; {why}){note}")
    return out


def _seeds_to_decide(diffs: pd.Series, strategies: int, alpha: float) -> int | None:
    """About how many seeds would show a shortfall like this one: a paired t-test's (80% power, Bonferroni over
    the other strategies), and at least what the permutation test needs to reach `alpha` at all (its smallest
    p-value with n seeds of k strategies is about (k!)^-(n-1))."""
    by_t = seeds_needed(list(diffs), alpha / max(1, strategies - 1))
    if by_t is None:
        return None
    floor = 2
    while math.factorial(strategies) ** -(floor - 1) > alpha:
        floor += 1
    return max(by_t, floor)
