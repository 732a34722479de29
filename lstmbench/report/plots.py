"""Plots of a report's sections (matplotlib, Agg): throughput, memory, accuracy, accuracy against time,
lengths, DDP straggler wait, and the crossover of a sweep. PNG bytes; storage writes them."""
from __future__ import annotations

import io
import json
import textwrap
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..suite import IDEAL  # noqa: E402


@dataclass(frozen=True)
class PlotData:
    """What the plots of one report section read: plain data, handed down by the report (which imports this
    module, never the reverse)."""

    title: str  # the section's title, on every chart
    suite: str
    device: str
    summary: pd.DataFrame  # one row per strategy (the report's summary columns)
    rows: pd.DataFrame  # the section's ok rows: one dot per run, curves, accuracy by length
    config: dict = field(default_factory=dict)  # the resolved suite the rows carry (target, seeds, data)


def plots(section: PlotData) -> dict[str, bytes]:
    s = section.summary
    out = {}
    names = list(s["strategy"])
    x = np.arange(len(names))

    fig, ax = plt.subplots(figsize=(7, 4))
    _dots(ax, section, names, "tokens_per_s", 1.0, "tab:blue")
    ax.set_ylabel("real tokens / s (one dot per run; bar: median)")
    ax.set_ylim(bottom=0)
    out["throughput"] = _finish(fig, ax, names, f"Training throughput: {section.title}")

    fig, (ax, right) = plt.subplots(1, 2, figsize=(9, 4))  # two scales: a process holds far more than tensors
    cuda = section.device != "cpu"
    ax.bar(x, s["train_mem_mib"], color="tab:orange")
    ax.set_ylabel("training tensors at their peak, MiB")
    if cuda:
        right.bar(x, s["reserved_mem_mib"], color="tab:gray")
        right.set_ylabel("CUDA reserved peak, MiB")
    else:
        right.bar(x, s["run_mem_mib"], color="tab:gray")
        right.set_ylabel("process peak RSS the run added, MiB")
    _finish(None, right, names, "")
    fig.suptitle(_wrap(f"Memory (median over runs): {section.title}"), fontsize=10)
    out["memory"] = _finish(fig, ax, names, "")

    fig, ax = plt.subplots(figsize=(7, 4))
    _dots(ax, section, names, "eval_accuracy", 1.0, "tab:blue", -0.15, "own inference path")
    _dots(ax, section, names, "eval_accuracy_exact", 1.0, "tab:orange", 0.15, "exact")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out accuracy (one dot per run; bar: median)")
    if ax.get_legend_handles_labels()[1]:
        ax.legend(loc="lower right")
    out["accuracy"] = _finish(fig, ax, names, f"Accuracy: {section.title}")

    curves = section.rows[["strategy", "curve"]]
    if len(curves) and curves["curve"].map(lambda c: isinstance(c, list) and len(c) > 1).any():
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, name in enumerate(n for n in names if n != IDEAL.name):
            for j, curve in enumerate(curves.loc[curves["strategy"] == name, "curve"]):
                t, _, acc = zip(*curve) if curve else ((), (), ())
                ax.plot(t, acc, color=f"C{i}", alpha=0.8, lw=1.2, marker=".", label=name if j == 0 else None)
        target = section.config.get("train", {}).get("target_accuracy")
        if target:
            ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
        out["time_to_accuracy"] = _accuracy_png(fig, ax, "training time, s (evaluation excluded)",
                                                "held-out accuracy, own path", "lower right",
                                                f"Accuracy against training time (one line per run): {section.title}")

    by_length = _accuracy_by_length(section.rows, names)
    if by_length:
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, (name, (centre, accuracy)) in enumerate(by_length.items()):
            ax.plot(centre, accuracy, color=f"C{i}", marker="o", ms=3, label=name)
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(matplotlib.ticker.FormatStrFormatter("%g"))  # 3, 10, 20: not 3x10^0
        out["accuracy_by_length"] = _accuracy_png(
            fig, ax, "sequence length (held-out set, bins of about a tenth each; log scale)",
            "held-out accuracy, own path (mean over runs)", "lower left", f"Accuracy by length: {section.title}")

    if "world_size" in s and (s["world_size"] > 1).any():
        fig, ax = plt.subplots(figsize=(7, 4))
        w = 0.38
        ax.bar(x - w / 2, 100 * s["straggler_wait_fraction"], w, label="measured", color="tab:red")
        ax.bar(x + w / 2, 100 * s["planned_wait_fraction"], w, label="planned (padded cells)", color="tab:gray")
        ax.set_ylabel("% of rank step time waiting for the slowest rank")
        ax.legend(fontsize=8)
        out["straggler"] = _finish(fig, ax, names, f"DDP straggler wait: {section.title}")

    lengths = _train_lengths(section.rows)
    if lengths is not None:
        seed, bins, marks = lengths
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.bar([lo for lo, _, _ in bins], [n for _, _, n in bins], width=[hi - lo for lo, hi, _ in bins],
               align="edge", color="tab:green")
        for v, label in zip(marks, ("median", "p90", "max")):
            ax.axvline(v, color="k", ls="--", lw=0.8)
            ax.text(v, ax.get_ylim()[1] * 0.95, f" {label} {v:.0f}", fontsize=8)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("training sequences")
        ax.set_title(f"Length distribution (seed {seed}): {section.suite}", fontsize=10)
        out["lengths"] = _png(fig)
    return out


def decision_plot(data: PlotData, winner: str | None) -> bytes | None:
    """Time to the target (or, where no run reached it, tokens/s) against accuracy through the strategy's own path:
    a dot per run (hollow: missed the target, at its full training time), a diamond per strategy (median time,
    mean accuracy), the Pareto front of the diamonds, the recommended strategy ringed. None without accuracies."""
    rows = data.rows[data.rows["strategy"] != IDEAL.name] if len(data.rows) else data.rows
    if rows.empty or pd.to_numeric(rows["eval_accuracy"], errors="coerce").isna().all():
        return None
    target = (data.config.get("train") or {}).get("target_accuracy")
    num = lambda frame, key: pd.to_numeric(frame[key], errors="coerce")  # noqa: E731
    timed = bool(target) and num(rows, "time_to_target_s").notna().any()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    names = list(dict.fromkeys(rows["strategy"]))
    for i, name in enumerate(names):
        mine = rows[rows["strategy"] == name]
        acc = num(mine, "eval_accuracy")
        if timed:
            t = num(mine, "time_to_target_s")
            hit = t.notna()
            ax.scatter(t[hit], acc[hit], color=f"C{i}", alpha=0.8, s=30, label=name)
            ax.scatter(num(mine, "train_time_s")[~hit], acc[~hit], facecolors="none", edgecolors=f"C{i}", s=30,
                       label=None if hit.any() else f"{name} (missed)")
        else:
            ax.scatter(num(mine, "tokens_per_s"), acc, color=f"C{i}", alpha=0.8, s=30, label=name)
    s = data.summary[(data.summary["strategy"] != IDEAL.name) & data.summary["eval_accuracy"].notna()]
    x = pd.to_numeric(s["time_to_target_s"] if timed else s["tokens_per_s"], errors="coerce").astype(float)
    s = s.assign(_x=x)[np.isfinite(x)]
    for _, r in s.iterrows():
        ax.scatter([r["_x"]], [r["eval_accuracy"]], marker="D", s=70, color=f"C{names.index(r['strategy'])}"
                   if r["strategy"] in names else "k", edgecolors="k", zorder=3)
    if len(s):
        front = s.iloc[pareto(s["_x"].tolist(), s["eval_accuracy"].tolist(), smaller_x=timed)].sort_values("_x")
        ax.plot(front["_x"], front["eval_accuracy"], "k:", lw=1.2, label="Pareto front (strategies)")
        chosen = s[s["strategy"] == winner]
        if len(chosen):
            ax.scatter(chosen["_x"], chosen["eval_accuracy"], marker="*", s=500, facecolors="none",
                       edgecolors="crimson", linewidths=1.8, zorder=4, label=f"recommended: {winner}")
    ax.set_xscale("log")
    ax.set_xlabel(f"training seconds to accuracy {target:g} (hollow: missed, at its full training time)" if timed
                  else "real tokens / s")
    ax.set_ylabel("held-out accuracy, own path")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right" if timed else "lower left")
    what = f"time to accuracy {target:g}" if timed else "throughput"
    ax.set_title(_wrap(f"Decision: {what} against accuracy (dot: a run; diamond: a strategy): {data.title}"),
                 fontsize=9)
    return _png(fig)


def pareto(x: list[float], y: list[float], smaller_x: bool) -> list[int]:
    """The indices of the points no other point beats on both x (smaller or larger is better) and y (larger)."""
    sign = 1 if smaller_x else -1
    out, best = [], -np.inf
    for i in sorted(range(len(x)), key=lambda i: (sign * x[i], -y[i])):
        if y[i] > best:
            out.append(i)
            best = y[i]
    return out


def crossover_plot(suite: str, swept: list[tuple[dict, pd.DataFrame]], against_naive: bool, measure: str) -> bytes:
    """Speed-up against naive (or, without naive, tokens/s) along the first swept key, one line per strategy
    (and per value of a second key): where packing wins and where it loses. `swept`: each sweep point (key
    path -> value) with its section's summary."""
    column = "speedup_vs_naive" if against_naive else "tokens_per_s"
    keys = list(swept[0][0])
    fig, ax = plt.subplots(figsize=(7, 4))
    strategies = list(dict.fromkeys(n for _, summary in swept for n in summary["strategy"] if n != "naive"))
    seconds = list(dict.fromkeys(point_label(point.get(keys[1])) for point, _ in swept)) if len(keys) > 1 else [None]
    # numbers along a numeric axis; anything else (a mapping of lengths, a name) as categories in sweep order
    firsts = [point.get(keys[0]) for point, _ in swept]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in firsts)
    categories = list(dict.fromkeys(point_label(v) for v in firsts))
    for i, name in enumerate(strategies):
        for j, second in enumerate(seconds):
            points = sorted((point[keys[0]] if numeric else categories.index(point_label(point[keys[0]])),
                             float(summary.set_index("strategy")[column].get(name, np.nan)))
                            for point, summary in swept
                            if second is None or point_label(point.get(keys[1])) == second)
            label = name if second is None else f"{name}, {keys[1]}={second}"
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{i}",
                    ls=["-", "--", ":", "-."][j % 4], label=label)
    if against_naive:
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, fontsize=7, rotation=15)
    ax.set_xlabel(keys[0])
    ax.set_ylabel(measure + (" (median tokens/s)" if against_naive else ""))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(_wrap(f"Crossover: {suite}"), fontsize=10)
    return _png(fig)


def point_label(value: Any) -> str:
    """A sweep value as an axis or legend label: a name as it is, anything else as compact JSON, cut to a line."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 40 else text[:39] + "…"


def _accuracy_png(fig: plt.Figure, ax: plt.Axes, xlabel: str, ylabel: str, legend: str, title: str) -> bytes:
    """The finish of a chart of accuracy (0 to 1) against something: labels, legend, grid, title; PNG bytes."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc=legend)
    ax.grid(alpha=0.3)
    ax.set_title(_wrap(title), fontsize=10)
    return _png(fig)


def _accuracy_by_length(rows: pd.DataFrame, names: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    """Per strategy: each length bin's centre and accuracy, averaged over the runs bin by bin (a seed's held-out
    set has its own bins; their edges differ little). Runs without bins (the ideal, older rows) are left out."""
    out = {}
    column = rows["accuracy_by_length"]
    for name in names:
        runs = [b for b in column[rows["strategy"] == name] if isinstance(b, list) and b]
        if not runs:
            continue
        k = min(len(b) for b in runs)
        centre = [float(np.mean([np.sqrt(b[j][0] * b[j][1]) for b in runs])) for j in range(k)]
        accuracy = [float(np.mean([b[j][3] for b in runs])) for j in range(k)]
        out[name] = (centre, accuracy)
    return out


def _train_lengths(rows: pd.DataFrame) -> tuple[int, list, list] | None:
    """The lowest seed's training lengths as its runs recorded them: (seed, [shortest, longest, count] per bin,
    [median, p90, longest]). None for rows from before the histogram was recorded (no chart then)."""
    has = rows[rows["train_length_histogram"].map(lambda b: isinstance(b, list) and len(b) > 0)
               & rows["train_length_percentiles"].map(lambda p: isinstance(p, list) and len(p) == 3)]
    if not len(has):
        return None
    first = has.sort_values("seed", kind="stable").iloc[0]
    return int(first["seed"]), first["train_length_histogram"], first["train_length_percentiles"]


def _dots(ax: plt.Axes, section: PlotData, names: list[str], column: str, scale: float, color: str,
          offset: float = 0.0, label: str | None = None) -> None:
    """Each run of each strategy as a dot (jittered sideways), its median as a short bar: no interval the
    runs cannot support."""
    rows, labelled = section.rows, False
    for i, name in enumerate(names):
        values = pd.to_numeric(rows.loc[rows["strategy"] == name, column], errors="coerce").dropna() * scale
        if values.empty:
            continue
        jitter = np.linspace(-0.08, 0.08, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + offset + jitter, values, s=18, color=color, alpha=0.8, zorder=3,
                   label=None if labelled else label)
        labelled = True
        ax.hlines(values.median(), i + offset - 0.14, i + offset + 0.14, color="k", lw=1.5, zorder=4)


def _finish(fig: plt.Figure | None, ax: plt.Axes, names: list[str], title: str) -> bytes:
    """Ticks, title and grid on `ax`; then the figure as PNG (none for `fig=None`: another panel follows)."""
    ax.set_xticks(np.arange(len(names)), names, rotation=25, ha="right")
    ax.set_title(_wrap(title), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig) if fig is not None else b""


def _wrap(title: str) -> str:
    return "\n".join(textwrap.wrap(title, 70))  # long titles (suite, machine, hash) would be cut off


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
