"""The report: result rows -> per-suite tables (Markdown, CSV, terminal) and plots (matplotlib, Agg).

One section per (suite, configuration hash, device): rows made by different configurations are never
averaged together.
"""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .data import make_data  # noqa: E402
from .errors import LstmbenchError  # noqa: E402
from .stats import UNSTABLE_IQR, bootstrap_ci, mean_std, spread  # noqa: E402
from .suite import suite_from_dict  # noqa: E402

BASELINE = "naive"  # speed-ups are against this strategy when the section has it


@dataclass
class Section:
    suite: str
    suite_hash: str
    device: str
    summary: pd.DataFrame  # one row per strategy, raw numbers
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)  # the section's ok rows (curves)
    machine: str = ""  # host and CPU the rows were measured on
    point: dict = field(default_factory=dict)  # a swept suite's point: key path -> value

    @property
    def title(self) -> str:
        where = f", {self.machine}" if self.machine else ""
        at = " [" + ", ".join(f"{k}={v}" for k, v in self.point.items()) + "]" if self.point else ""
        return f"{self.suite}{at} on {self.device}{where} (configuration {self.suite_hash})"

    def table(self) -> pd.DataFrame:
        return format_table(self.summary)


@dataclass
class SuiteReport:
    suite: str
    sections: list[Section]

    def markdown(self) -> str:
        parts = [f"# lstmbench report: {self.suite}\n"]
        for s in self.sections:
            parts.append(f"## {s.title}\n")
            if s.config.get("description"):
                parts.append(s.config["description"] + "\n")
            parts.append(s.table().to_markdown(index=False) + "\n")
            rank = ranking(s.summary, s.config.get("train", {}).get("target_accuracy"))
            if rank:
                parts.append("\n".join(rank) + "\n")
            parts += [f"- {n}" for n in s.notes]
            parts.append("")
        cross = self.crossover()
        if not cross.empty:
            key = next(iter(self.sections[0].point))
            parts.append(f"## Crossover: speed-up against naive by {key}\n")
            parts.append(cross.to_markdown() + "\n")
        return "\n".join(parts)

    def crossover(self) -> pd.DataFrame:
        """Speed-up against naive (median tokens/s ratio) per strategy (rows) and sweep point (columns)."""
        swept = [s for s in self.sections if s.point]
        if not swept:
            return pd.DataFrame()
        cells = {}
        for s in swept:
            label = ", ".join(f"{k}={v}" for k, v in s.point.items())
            cells[label] = s.summary.set_index("strategy")["speedup_vs_naive"]
        return pd.DataFrame(cells).round(2)

    def files(self) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {"summary.md": self.markdown()}
        frames = [s.summary.assign(suite=s.suite, suite_hash=s.suite_hash, device=s.device, machine=s.machine)
                  for s in self.sections]
        out["summary.csv"] = pd.concat(frames).to_csv(index=False)
        for i, s in enumerate(self.sections):
            tag = "" if len(self.sections) == 1 else f"-{i + 1}-{s.device}-{s.suite_hash}"
            for name, png in plots(s).items():
                out[f"{name}{tag}.png"] = png
        if any(s.point for s in self.sections):
            out["crossover.png"] = crossover_plot(self)
        return out


def build_reports(rows: pd.DataFrame) -> list[SuiteReport]:
    """One report per suite; one section per (configuration, device, machine): runs of different
    configurations or machines are never averaged together."""
    rows = rows.assign(machine=[_machine(env) for env in (rows["env"] if "env" in rows else [{}] * len(rows))])
    reports = []
    for suite, suite_rows in rows.groupby("suite", sort=True):
        sections = []
        keys = ["suite_hash", "device", "machine"]
        for (suite_hash, device, machine), group in suite_rows.groupby(keys, sort=False):
            sections.append(_section(str(suite), str(suite_hash), str(device), group, machine))
        reports.append(SuiteReport(str(suite), sections))
    return reports


def _machine(env: object) -> str:
    if not isinstance(env, dict) or not env.get("host"):
        return "unknown machine"
    return f"{env['host']}, {env.get('cpu') or env.get('device_name') or '?'}"


def _section(suite: str, suite_hash: str, device: str, rows: pd.DataFrame, machine: str = "") -> Section:
    config = rows["config"].iloc[-1] if "config" in rows else {}
    order = [s["name"] for s in config.get("strategies", [])] or list(dict.fromkeys(rows["strategy"]))
    order += [s for s in dict.fromkeys(rows["strategy"]) if s not in order]
    ok = rows[rows["status"] == "ok"]
    records = []
    for name in order:
        mine, good = rows[rows["strategy"] == name], ok[ok["strategy"] == name]
        if mine.empty:
            continue
        tps = spread(good["tokens_per_s"])
        tps_low, tps_high = bootstrap_ci(good["tokens_per_s"])
        acc, acc_sd = mean_std(good["eval_accuracy"].dropna())
        exact, exact_sd = mean_std(good["eval_accuracy_exact"].dropna())
        acc_low, acc_high = bootstrap_ci(good["eval_accuracy"].dropna())
        reached = _column(good, "time_to_target_s").dropna()
        records.append({
            "strategy": name,
            "computes": mine["computation_note"].iloc[-1] or "exact",
            "lstm_kernel": "/".join(sorted(set(_column(good, "lstm_kernel").dropna()))) or "-",
            "runs_ok": len(good), "runs_failed": len(mine) - len(good),
            "tokens_per_s": tps.median, "tokens_per_s_ci_low": tps_low, "tokens_per_s_ci_high": tps_high,
            "tokens_per_s_min": tps.low, "tokens_per_s_max": tps.high,
            "tokens_per_s_iqr_rel": tps.iqr_rel, "unstable": tps.unstable,
            "efficiency": spread(_column(good, "efficiency").dropna()).median,
            "samples_per_s": spread(good["samples_per_s"]).median,
            "pad_fraction": spread(good["pad_fraction"]).median,
            "data_time_fraction": spread(good["data_time_fraction"]).median,
            "train_time_s": spread(good["train_time_s"]).median,
            "step_time_median_s": spread(_column(good, "step_time_median_s")).median,
            "peak_mem_mib": spread(good["peak_mem_bytes"]).median / 2**20,
            "run_mem_mib": spread(good["peak_mem_bytes"] - good["baseline_rss_bytes"]).median / 2**20
            if device == "cpu" else np.nan,
            "eval_accuracy": acc, "eval_accuracy_sd": acc_sd,
            "eval_accuracy_ci_low": acc_low, "eval_accuracy_ci_high": acc_high,
            "eval_accuracy_exact": exact, "eval_accuracy_exact_sd": exact_sd,
            "time_to_target_s": spread(reached).median, "reached_target": len(reached),
        })
    summary = pd.DataFrame(records)
    base = summary.loc[summary["strategy"] == BASELINE, "tokens_per_s"]
    summary["speedup_vs_naive"] = summary["tokens_per_s"] / base.iloc[0] if len(base) else np.nan
    point = rows["sweep"].iloc[-1] if "sweep" in rows and isinstance(rows["sweep"].iloc[-1], dict) else {}
    return Section(suite, suite_hash, device, summary, _notes(rows, ok), config, ok, machine, point)


def _column(rows: pd.DataFrame, key: str) -> pd.Series:
    """A column that rows of an older lstmbench may lack: all missing then."""
    return rows[key] if key in rows else pd.Series([np.nan] * len(rows), index=rows.index, dtype=float)


def _notes(rows: pd.DataFrame, ok: pd.DataFrame) -> list[str]:
    notes = []
    seeds = sorted(ok["seed"].unique())
    same_init = all(ok.loc[ok["seed"] == s, "init_checksum"].nunique() == 1 for s in seeds)
    if not seeds:
        notes.append("No run succeeded: nothing was measured.")
    elif same_init:
        notes.append(f"Initial weights identical across strategies for each of the {len(seeds)} seed(s) "
                     f"(init_checksum per seed: {', '.join(ok.groupby('seed')['init_checksum'].first())}).")
    else:
        notes.append("WARNING: initial weights differ between strategies of the same seed; the runs are not "
                     "comparable.")
    env = ok["env"].iloc[-1] if len(ok) else {}
    if env:
        notes.append(f"Measured on {env.get('cpu')} ({env.get('threads')} threads), device {env.get('device_name')}, "
                     f"torch {env.get('torch')}, lstmbench {env.get('lstmbench')} at {env.get('git_commit')}.")
    for _, r in rows[rows["status"] != "ok"].iterrows():
        notes.append(f"FAILED: {r['strategy']} seed {r['seed']}: {r['status']}: {r['error']}")
    notes.append("tokens/s counts real (non-padding) tokens per second of training steps, warm-up and evaluation "
                 "excluded: the median over seeds and its 95% bootstrap confidence interval; 'unstable' marks an "
                 f"IQR over {UNSTABLE_IQR:.0%} of the median. efficiency = tokens/s / the zero-padding ideal's "
                 "tokens/s, same invocation and seed. Accuracy is mean ± sd over seeds: 'own path' through the "
                 "strategy's inference path, 'exact' the same weights evaluated per sequence.")
    return notes


def ranking(summary: pd.DataFrame, target: float | None) -> list[str]:
    """Strategies ranked by median time to the target accuracy (MLPerf's score), never-reached last."""
    if not target:
        return []
    rows = summary[summary["strategy"] != "ideal"].sort_values("time_to_target_s", na_position="last")
    lines = [f"Time to accuracy {target:g} (median training seconds over the runs that reached it):"]
    for i, r in enumerate(rows.itertuples(), 1):
        when = "never reached" if np.isnan(r.time_to_target_s) else f"{r.time_to_target_s:.2f} s"
        lines.append(f"  {i}. {r.strategy}: {when} ({r.reached_target}/{r.runs_ok} runs)")
    return lines


def format_table(summary: pd.DataFrame) -> pd.DataFrame:
    def pm(mean: float, sd: float) -> str:
        return "-" if np.isnan(mean) else f"{mean:.3f} ± {sd:.3f}"

    out = pd.DataFrame({
        "strategy": summary["strategy"],
        "computes": summary["computes"],
        "kernel": summary["lstm_kernel"],
        "runs": [f"{ok}" + (f" ({bad} failed)" if bad else "") for ok, bad in
                 zip(summary["runs_ok"], summary["runs_failed"])],
        "tokens/s (median [95% CI])": [
            "-" if np.isnan(m) else f"{m:,.0f} [{lo:,.0f}-{hi:,.0f}]" + (" unstable" if u else "")
            for m, lo, hi, u in zip(summary["tokens_per_s"], summary["tokens_per_s_ci_low"],
                                    summary["tokens_per_s_ci_high"], summary["unstable"])],
        "vs naive": ["-" if np.isnan(x) else f"{x:.2f}x" for x in summary["speedup_vs_naive"]],
        "efficiency": [_pct(x, 0) + "%" if not np.isnan(x) else "-" for x in summary["efficiency"]],
        "pad %": [_pct(x) for x in summary["pad_fraction"]],
        "data prep %": [_pct(x, 2) for x in summary["data_time_fraction"]],
        "peak MiB": [_mem(p, r) for p, r in zip(summary["peak_mem_mib"], summary["run_mem_mib"])],
        "accuracy, own path": [pm(m, s) for m, s in zip(summary["eval_accuracy"], summary["eval_accuracy_sd"])],
        "accuracy, exact": [pm(m, s) for m, s in zip(summary["eval_accuracy_exact"],
                                                      summary["eval_accuracy_exact_sd"])],
        "time to target s": ["-" if n == 0 else f"{t:.2f}" + ("" if n == k else f" ({n}/{k})")
                             for t, n, k in zip(summary["time_to_target_s"], summary["reached_target"],
                                                summary["runs_ok"])],
        "train s": ["-" if np.isnan(x) else f"{x:.2f}" for x in summary["train_time_s"]],
    })
    return out


def _mem(peak: float, run: float) -> str:
    """Peak, and on CPU what the run added to the process (the rest is Python and torch)."""
    if np.isnan(peak):
        return "-"
    return f"{peak:,.0f}" + ("" if np.isnan(run) else f" (+{run:,.0f})")


def _pct(x: float, digits: int = 1) -> str:
    return "-" if np.isnan(x) else f"{100 * x:.{digits}f}"


# ----------------------------------------------------------------------------- plots
def plots(section: Section) -> dict[str, bytes]:
    s = section.summary
    out = {}
    names = list(s["strategy"])
    x = np.arange(len(names))

    fig, ax = plt.subplots(figsize=(7, 4))
    err = np.vstack([s["tokens_per_s"] - s["tokens_per_s_ci_low"], s["tokens_per_s_ci_high"] - s["tokens_per_s"]])
    ax.bar(x, s["tokens_per_s"], yerr=err, capsize=4, color="tab:blue")
    ax.set_ylabel("real tokens / s (median, 95% CI over seeds)")
    out["throughput"] = _finish(fig, ax, names, f"Training throughput: {section.title}")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x, s["peak_mem_mib"], color="tab:orange")
    ax.set_ylabel("peak memory, MiB" + (" (process RSS)" if section.device == "cpu" else " (CUDA allocated)"))
    out["memory"] = _finish(fig, ax, names, f"Peak memory: {section.title}")

    fig, ax = plt.subplots(figsize=(7, 4))
    w = 0.38
    ax.bar(x - w / 2, s["eval_accuracy"], w, yerr=s["eval_accuracy_sd"], capsize=3, label="own inference path")
    ax.bar(x + w / 2, s["eval_accuracy_exact"], w, yerr=s["eval_accuracy_exact_sd"], capsize=3, label="exact")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out accuracy (mean ± sd over seeds)")
    ax.legend(loc="lower right")
    out["accuracy"] = _finish(fig, ax, names, f"Accuracy: {section.title}")

    curves = section.rows[["strategy", "curve"]] if "curve" in section.rows else pd.DataFrame()
    if len(curves) and curves["curve"].map(lambda c: isinstance(c, list) and len(c) > 1).any():
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, name in enumerate(n for n in names if n != "ideal"):
            for j, curve in enumerate(curves.loc[curves["strategy"] == name, "curve"]):
                t, _, acc = zip(*curve) if curve else ((), (), ())
                ax.plot(t, acc, color=f"C{i}", alpha=0.8, lw=1.2, marker=".", label=name if j == 0 else None)
        target = section.config.get("train", {}).get("target_accuracy")
        if target:
            ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
        ax.set_xlabel("training time, s (evaluation excluded)")
        ax.set_ylabel("held-out accuracy, own path")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        ax.set_title(_wrap(f"Accuracy against training time (one line per run): {section.title}"), fontsize=10)
        out["time_to_accuracy"] = _png(fig)

    lengths = _train_lengths(section.config)
    if lengths is not None:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist(lengths, bins=50, color="tab:green")
        for q, label in [(50, "median"), (90, "p90"), (100, "max")]:
            v = np.percentile(lengths, q)
            ax.axvline(v, color="k", ls="--", lw=0.8)
            ax.text(v, ax.get_ylim()[1] * 0.95, f" {label} {v:.0f}", fontsize=8)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("training sequences")
        ax.set_title(f"Length distribution (seed {section.config['seeds'][0]}): {section.suite}", fontsize=10)
        out["lengths"] = _png(fig)
    return out


def crossover_plot(report: SuiteReport) -> bytes:
    """Speed-up against naive along the first swept key, one line per strategy (and per value of a second
    key): where packing wins and where it loses."""
    swept = [s for s in report.sections if s.point]
    keys = list(swept[0].point)
    fig, ax = plt.subplots(figsize=(7, 4))
    strategies = list(dict.fromkeys(n for s in swept for n in s.summary["strategy"] if n != "naive"))
    seconds = list(dict.fromkeys(s.point.get(keys[1]) for s in swept)) if len(keys) > 1 else [None]
    for i, name in enumerate(strategies):
        for j, second in enumerate(seconds):
            points = sorted((s.point[keys[0]], float(s.summary.set_index("strategy")["speedup_vs_naive"]
                                                     .get(name, np.nan)))
                            for s in swept if second is None or s.point.get(keys[1]) == second)
            label = name if second is None else f"{name}, {keys[1]}={second}"
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{i}",
                    ls=["-", "--", ":", "-."][j % 4], label=label)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel(keys[0])
    ax.set_ylabel("speed-up against naive (median tokens/s)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(_wrap(f"Crossover: {report.suite}"), fontsize=10)
    return _png(fig)


def _train_lengths(config: dict) -> np.ndarray | None:
    try:
        suite = suite_from_dict(config)
    except LstmbenchError:  # a row from another version: the histogram is optional
        return None
    return make_data(suite.data, suite.seeds[0]).train.lengths


def _finish(fig: plt.Figure, ax: plt.Axes, names: list[str], title: str) -> bytes:
    ax.set_xticks(np.arange(len(names)), names, rotation=20)
    ax.set_title(_wrap(title), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _wrap(title: str) -> str:
    return "\n".join(textwrap.wrap(title, 70))  # long titles (suite, machine, hash) would be cut off


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
