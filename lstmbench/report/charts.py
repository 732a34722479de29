"""The interactive charts of the HTML report (plotly figures; html.py renders them into the page).

Every chart plots each run (each seed of each strategy) as its own dot, its hover naming the strategy, the seed
and the values; a chart whose data the rows lack (older rows, no sweep, no DDP) is not made at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from ..suite import IDEAL
from .plots import pareto, point_label

if TYPE_CHECKING:
    from .summary import Section, SuiteReport


PALETTE = qualitative.Plotly + qualitative.D3
MIB = 2**20


@dataclass
class Chart:
    key: str  # a short name, unique in its section: the div's id ends with it
    figure: go.Figure
    caption: str = ""


def colors(names: list[str]) -> dict[str, str]:
    """One colour per strategy, the same in every chart of a section."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def numbers(rows: pd.DataFrame, key: str) -> pd.Series:
    """A numeric column (rows are migrated on reading: every column is there); None becomes NaN."""
    return pd.to_numeric(rows[key], errors="coerce").astype(float)


def _layout(fig: go.Figure, title: str, xtitle: str, ytitle: str, **more: Any) -> go.Figure:
    fig.update_layout(template="plotly_white", title={"text": title, "font": {"size": 15}}, height=440,
                      margin={"l": 70, "r": 20, "t": 60, "b": 60}, hovermode="closest",
                      legend={"font": {"size": 11}}, **more)
    fig.update_xaxes(title_text=xtitle)
    fig.update_yaxes(title_text=ytitle)
    return fig


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    """A number for a hover label; '-' for a missing one."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:{spec}}{unit}"


def _hover(*lines: str) -> str:
    return "<br>".join(["<b>%{customdata[0]}</b>, seed %{customdata[1]}", *lines]) + "<extra></extra>"


def section_charts(section: Section, winner: str | None, why: str) -> list[Chart]:
    """The section's charts, in the page's order; `winner`/`why`: the recommendation marked on the first."""
    names = list(section.summary["strategy"]) if len(section.summary) else []
    palette = colors(names)
    if len(section.rows):  # the runs in the table's order of strategies (the suite's), then by seed
        rank = {name: i for i, name in enumerate(names)}
        rows = section.rows.assign(_order=section.rows["strategy"].map(rank).fillna(len(names)))
        section = replace(section, rows=rows.sort_values(["_order", "seed"], kind="stable").drop(columns="_order"))
    makers = [lambda: decision_chart(section, palette, winner, why), lambda: curve_chart(section, palette),
              lambda: length_chart(section, palette), lambda: throughput_chart(section, palette),
              lambda: memory_chart(section), lambda: straggler_chart(section)]
    return [chart for make in makers if (chart := make()) is not None]


def _target(section: Section) -> float | None:
    return (section.config.get("train", {}) if isinstance(section.config, dict) else {}).get("target_accuracy")


def decision_chart(section: Section, palette: dict[str, str], winner: str | None, why: str) -> Chart | None:
    """Time to the target (or, where there is none or no run reached it, tokens/s) against accuracy through the
    strategy's own path: a dot per run, a diamond per strategy (the table's median time and mean accuracy), the
    Pareto front of those diamonds, and the recommended strategy's diamond ringed."""
    rows = section.rows[section.rows["strategy"] != IDEAL.name] if len(section.rows) else section.rows
    if rows.empty or numbers(rows, "eval_accuracy").isna().all():
        return None
    target = _target(section)
    reached = numbers(rows, "time_to_target_s")
    timed = bool(target) and reached.notna().any()
    fig = go.Figure()
    for name in dict.fromkeys(rows["strategy"]):
        mine = rows[rows["strategy"] == name]
        acc, tps, t = numbers(mine, "eval_accuracy"), numbers(mine, "tokens_per_s"), numbers(mine, "time_to_target_s")
        train = numbers(mine, "train_time_s")
        data = np.array([[name, seed, _fmt(a, ".3f"), _fmt(e, ".3f"), _fmt(v, ",.0f"), _fmt(w, ".2f", " s"),
                          _fmt(u, ".2f", " s")] for seed, a, e, v, w, u in
                         zip(mine["seed"], acc, numbers(mine, "eval_accuracy_exact"), tps, t, train)], dtype=object)
        hover = _hover("accuracy, own path %{customdata[2]} (exact %{customdata[3]})", "tokens/s %{customdata[4]}",
                       "time to target %{customdata[5]}", "training %{customdata[6]}")
        hit = t.notna().to_numpy() if timed else np.ones(len(mine), bool)
        x = t if timed else tps
        if hit.any():
            fig.add_scatter(x=x[hit], y=acc[hit], mode="markers", name=name, legendgroup=name, customdata=data[hit],
                            marker={"color": palette.get(name), "size": 9, "opacity": 0.8}, hovertemplate=hover)
        if timed and (~hit).any():  # missed the target: at the end of its training, hollow
            fig.add_scatter(x=train[~hit], y=acc[~hit], mode="markers", name=name if not hit.any() else
                            f"{name}: missed the target", legendgroup=name, showlegend=not hit.any(),
                            customdata=data[~hit],
                            marker={"color": palette.get(name), "size": 9, "symbol": "circle-open"},
                            hovertemplate=hover.replace("time to target %{customdata[5]}", "target missed"))
    s = section.summary[(section.summary["strategy"] != IDEAL.name) & section.summary["eval_accuracy"].notna()]
    sx = s["time_to_target_s"] if timed else s["tokens_per_s"]
    s = s.assign(_x=sx.astype(float))[np.isfinite(sx.astype(float))]
    if len(s):
        fig.add_scatter(x=s["_x"], y=s["eval_accuracy"], mode="markers", name="strategy (median, mean accuracy)",
                        customdata=np.column_stack([s["strategy"], s["runs_ok"]]),
                        marker={"symbol": "diamond", "size": 12, "color": [palette.get(n) for n in s["strategy"]],
                                "line": {"color": "black", "width": 1}},
                        hovertemplate="<b>%{customdata[0]}</b> (%{customdata[1]} runs)<br>"
                                      + ("median time to target %{x:.2f} s" if timed else "median tokens/s %{x:,.0f}")
                                      + "<br>mean accuracy %{y:.3f}<extra></extra>")
        front = pareto(s["_x"].tolist(), s["eval_accuracy"].tolist(), smaller_x=timed)
        ordered = s.iloc[front].sort_values("_x")
        fig.add_scatter(x=ordered["_x"], y=ordered["eval_accuracy"], mode="lines", name="Pareto front (strategies)",
                        line={"color": "black", "dash": "dot", "width": 1.5}, hoverinfo="skip")
        chosen = s[s["strategy"] == winner]
        if len(chosen):
            fig.add_scatter(x=chosen["_x"], y=chosen["eval_accuracy"], mode="markers+text",
                            name=f"recommended: {winner}", text=[f"recommended: {winner}"], textposition="top center",
                            hoverinfo="skip",
                            marker={"symbol": "star-open", "size": 24, "color": "crimson", "line": {"width": 2}})
    if timed:
        xtitle = f"training seconds to accuracy {target:g} (hollow: missed it, at its full training time)"
        what = f"time to accuracy {target:g}"
    else:
        xtitle, what = "real tokens / s", "throughput"
        if target:
            what += f" (no run reached accuracy {target:g})"
    median = "median time to target" if timed else "median tokens/s"
    caption = (f"Each dot is one run; each diamond a strategy as in the table ({median}, mean accuracy); the dotted "
               f"line joins the strategies no other beats on both {what} and accuracy (the Pareto front of the "
               f"strategy medians); the ringed star marks the recommended strategy"
               + (f", {winner}." if winner else f": none ({why})."))
    fig = _layout(fig, f"Decision: {what} against accuracy (one dot per run)", xtitle + " (log scale)",
                  "held-out accuracy, own path")
    fig.update_xaxes(type="log")
    return Chart("decision", fig, caption)


def curve_chart(section: Section, palette: dict[str, str]) -> Chart | None:
    """Held-out accuracy at each evaluation against training seconds: a line per run (the rows' `curve`,
    [seconds, step, accuracy] per evaluation)."""
    rows = section.rows
    fig = go.Figure()
    shown: set[str] = set()
    for r in rows[rows["strategy"] != IDEAL.name].itertuples():
        curve = [p for p in r.curve if len(p) >= 3] if isinstance(r.curve, list) else []
        if not curve:
            continue
        t, step, acc = (list(c) for c in zip(*curve))
        fig.add_scatter(x=t, y=acc, mode="lines+markers", name=r.strategy, legendgroup=r.strategy,
                        showlegend=r.strategy not in shown, line={"color": palette.get(r.strategy), "width": 1.5},
                        marker={"size": 5}, customdata=[[r.strategy, r.seed, s] for s in step],
                        hovertemplate=_hover("step %{customdata[2]}: %{x:.2f} s", "accuracy %{y:.3f}"))
        shown.add(r.strategy)
    if not shown:
        return None
    target = _target(section)
    if target:
        fig.add_hline(y=target, line={"dash": "dash", "color": "black", "width": 1},
                      annotation_text=f"target {target:g}", annotation_position="bottom right")
    fig = _layout(fig, "Accuracy against training time (one line per run)",
                  "training time, s (evaluation excluded)", "held-out accuracy, own path", yaxis={"range": [0, 1.02]})
    return Chart("curve", fig, "Each line is one run, a dot per evaluation; click a legend entry to hide a strategy.")


def length_chart(section: Section, palette: dict[str, str]) -> Chart | None:
    """Accuracy per length bin of the held-out set (the rows' `accuracy_by_length`: [low, high, count,
    accuracy] per bin), a line per run, at each bin's geometric centre (log scale)."""
    rows = section.rows
    fig = go.Figure()
    shown: set[str] = set()
    for r in rows.itertuples():
        bins = [b for b in r.accuracy_by_length if len(b) >= 4] if isinstance(r.accuracy_by_length, list) else []
        if not bins:
            continue
        fig.add_scatter(x=[math.sqrt(max(b[0], 1) * max(b[1], 1)) for b in bins], y=[b[3] for b in bins],
                        mode="lines+markers", name=r.strategy, legendgroup=r.strategy,
                        showlegend=r.strategy not in shown, line={"color": palette.get(r.strategy), "width": 1},
                        marker={"size": 6}, customdata=[[r.strategy, r.seed, b[0], b[1], b[2]] for b in bins],
                        hovertemplate=_hover("lengths %{customdata[2]}-%{customdata[3]} (%{customdata[4]} sequences)",
                                             "accuracy %{y:.3f}"))
        shown.add(r.strategy)
    if not shown:
        return None
    fig = _layout(fig, "Accuracy by sequence length (one line per run)",
                  "sequence length, tokens (held-out set, bins of about a tenth each; log scale)",
                  "held-out accuracy, own path", yaxis={"range": [0, 1.02]})
    fig.update_xaxes(type="log")
    return Chart("by_length", fig, "Each line is one run; a dot per length bin at the bin's geometric centre.")


def _strips(fig: go.Figure, rows: pd.DataFrame, values: pd.Series, name: str, color: str | None,
            unit: str, legend: bool, spec: str = ",.1f") -> None:
    """One box trace of per-run dots (every run shown, the box its quartiles) over the strategies on x."""
    keep = values.notna().to_numpy()
    if not keep.any():
        return
    mine = rows[keep]
    fig.add_box(x=mine["strategy"], y=values[keep], name=name, boxpoints="all", jitter=0.4, pointpos=0,
                marker={"size": 7, "color": color, "opacity": 0.85}, line={"width": 1}, showlegend=legend,
                customdata=np.column_stack([mine["strategy"], mine["seed"]]), hoveron="points",
                hovertemplate=_hover(f"{name}: %{{y:{spec}}} {unit}"))


def _categories(rows: pd.DataFrame) -> dict[str, Any]:
    """An x axis of strategies in the rows' order (plotly's own would be the order the traces met them)."""
    return {"categoryorder": "array", "categoryarray": list(dict.fromkeys(rows["strategy"]))}


def throughput_chart(section: Section, palette: dict[str, str]) -> Chart | None:
    rows = section.rows
    if rows.empty or numbers(rows, "tokens_per_s").isna().all():
        return None
    fig = go.Figure()
    for name in dict.fromkeys(rows["strategy"]):
        mine = rows[rows["strategy"] == name]
        _strips(fig, mine, numbers(mine, "tokens_per_s"), name, palette.get(name), "tokens/s", False, ",.0f")
    fig = _layout(fig, "Training throughput (every run; box: quartiles)", "strategy", "real tokens / s",
                  yaxis={"rangemode": "tozero"}, xaxis=_categories(rows))
    return Chart("throughput", fig, "Real (non-padding) tokens per second of training steps, warm-up and "
                                    "evaluation excluded; each dot one run.")


def memory_chart(section: Section) -> Chart | None:
    """Training tensors at their peak (allocated), and the CUDA allocator's reserved peak or, on CPU, what the
    run added to the process's peak resident memory: every run, grouped by strategy."""
    rows = section.rows
    if rows.empty:
        return None
    series = [("training tensors at peak (allocated)", numbers(rows, "train_mem_bytes") / MIB, "#ef553b")]
    if section.device == "cpu":
        added = (numbers(rows, "peak_mem_bytes") - numbers(rows, "baseline_rss_bytes")) / MIB
        series.append(("process peak RSS the run added", added, "#7f7f7f"))
    else:
        series.append(("CUDA allocator reserved peak", numbers(rows, "peak_mem_reserved_bytes") / MIB, "#7f7f7f"))
    series = [s for s in series if s[1].notna().any()]
    if not series:
        return None
    fig = go.Figure()
    for name, values, color in series:
        _strips(fig, rows, values, name, color, "MiB", True)
    fig = _layout(fig, "Memory (every run; box: quartiles)", "strategy", "MiB", boxmode="group",
                  yaxis={"rangemode": "tozero"}, xaxis=_categories(rows))
    return Chart("memory", fig, "Evaluations are left out of both measures; see the notes for how each is taken.")


def straggler_chart(section: Section) -> Chart | None:
    rows = section.rows
    measured = numbers(rows, "straggler_wait_fraction") * 100
    if rows.empty or measured.isna().all():
        return None
    fig = go.Figure()
    _strips(fig, rows, measured, "measured", "#d62728", "%", True)
    _strips(fig, rows, numbers(rows, "planned_wait_fraction") * 100, "planned (padded cells)", "#7f7f7f", "%", True)
    fig = _layout(fig, "DDP straggler wait (every run)", "strategy",
                  "% of rank step time waiting for the slowest rank", boxmode="group", yaxis={"rangemode": "tozero"},
                  xaxis=_categories(rows))
    return Chart("straggler", fig, "The share of each rank's step time spent at the all-reduce waiting for the "
                                   "slowest rank: measured, and estimated from the plan's padded cells alone.")


def crossover_chart(report: SuiteReport) -> Chart | None:
    """A sweep: each run's tokens/s against the first swept value, per strategy (and value of a second swept
    key), with a line through the medians: where one strategy overtakes another."""
    swept = [s for s in report.sections if s.point]
    if not swept:
        return None
    keys = list(swept[0].point)
    names = list(dict.fromkeys(n for s in swept for n in s.summary["strategy"]))
    palette = colors(names)
    dashes = ["solid", "dash", "dot", "dashdot"]
    seconds = list(dict.fromkeys(point_label(s.point.get(keys[1])) for s in swept)) if len(keys) > 1 else [None]
    # numbers along a numeric axis; anything else (a mapping of lengths, a name) as categories in sweep order
    numeric = all(isinstance(s.point.get(keys[0]), (int, float)) and not isinstance(s.point.get(keys[0]), bool)
                  for s in swept)
    x_of = (lambda point: point[keys[0]]) if numeric else (lambda point: point_label(point[keys[0]]))  # noqa: E731
    fig = go.Figure()
    for name in names:
        for j, second in enumerate(seconds):
            xs, ys, data, medians = [], [], [], []
            for s in swept:
                if second is not None and point_label(s.point.get(keys[1])) != second:
                    continue
                mine = s.rows[s.rows["strategy"] == name] if len(s.rows) else s.rows
                tps = numbers(mine, "tokens_per_s").dropna()
                if tps.empty:
                    continue
                xs += [x_of(s.point)] * len(tps)
                ys += tps.tolist()
                data += [[name, seed, s.suite_hash] for seed in mine.loc[tps.index, "seed"]]
                medians.append((x_of(s.point), float(tps.median())))
            if not xs:
                continue
            label = name if second is None else f"{name}, {keys[1]}={second}"
            fig.add_scatter(x=xs, y=ys, mode="markers", name=label, legendgroup=label, customdata=data,
                            marker={"color": palette[name], "size": 8, "opacity": 0.8},
                            hovertemplate=_hover(f"{keys[0]} = %{{x}}", "tokens/s %{y:,.0f}",
                                                 "configuration %{customdata[2]}"))
            if numeric:
                medians.sort(key=lambda p: p[0])
            fig.add_scatter(x=[m[0] for m in medians], y=[m[1] for m in medians], mode="lines", legendgroup=label,
                            showlegend=False, line={"color": palette[name], "dash": dashes[j % 4]}, hoverinfo="skip")
    if not fig.data:
        return None
    fig = _layout(fig, f"Crossover: tokens/s by {keys[0]} (one dot per run; line: median)", keys[0],
                  "real tokens / s", yaxis={"rangemode": "tozero"})
    if numeric:
        fig.update_xaxes(tickvals=sorted(set(s.point[keys[0]] for s in swept)))  # the swept values, not 1.2, 1.4
    else:
        fig.update_xaxes(type="category")
    return Chart("crossover", fig, "Where the lines cross, the faster strategy changes with the swept value.")
