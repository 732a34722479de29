"""The report: result rows -> per-suite tables (Markdown, CSV, terminal) and plots (matplotlib, Agg).

One section per (suite, configuration hash, device, hardware, code): rows made by different configurations,
machines, lstmbench commits or torch versions are never averaged together, unless `pool` says so (and then
the section names every commit and version it pooled).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..measure import busy_warning, split_disturbed
from ..results import code, hardware, software
from ..stats import UNSTABLE_IQR, Interval, mean_std, median_interval, runs_for_ci, spread
from ..suite import IDEAL, safe_name
from .plots import PlotData, crossover_plot, plots
from .quality import accuracy_verdicts
from .verdicts import Accuracy, Computes, Level, Verdict, kind_of

BASELINE = "naive"  # speed-ups are against this strategy when the section has it


@dataclass
class Section:
    suite: str
    suite_hash: str
    device: str
    summary: pd.DataFrame  # one row per strategy, raw numbers
    notes: list[Verdict] = field(default_factory=list)  # each with its Level
    config: dict = field(default_factory=dict)
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)  # the section's ok rows (curves)
    machine: str = ""  # the hardware the rows were measured on (CPU model, or GPU name)
    point: dict = field(default_factory=dict)  # a swept suite's point: key path -> value
    hosts: str = ""  # the hosts of that hardware the rows came from (shards of a cluster job: several)
    code: str = ""  # the lstmbench commit(s) and torch version(s) that measured the rows
    pooled: bool = False  # rows of several codes in one section (report --pool)
    disturbed: pd.DataFrame = field(default_factory=pd.DataFrame)  # ok rows left out: measured on a busy machine

    @property
    def title(self) -> str:
        where = f", {self.hosts + ', ' if self.hosts else ''}{self.machine}" if self.machine else ""
        at = " [" + ", ".join(f"{k}={v}" for k, v in self.point.items()) + "]" if self.point else ""
        return f"{self.suite}{at} on {self.device}{where} (configuration {self.suite_hash}; {self.code})"

    def table(self) -> pd.DataFrame:
        return format_table(self.summary)

    def file_tag(self, index: int, sections: int) -> str:
        """What tells this section's files apart from the other sections' ('' when it is the only one): row
        fields made into a safe file name (files.safe_name), never a path."""
        return "" if sections == 1 else "-" + safe_name(f"{index + 1}-{self.device}-{self.suite_hash}")


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
            rank = ranking(s.summary, s.config.get("train", {}).get("target_accuracy"),
                           s.config.get("train", {}).get("max_time_s"))
            if rank:
                parts.append("\n".join(rank) + "\n")
            parts += [f"- {n}" for n in s.notes]
            parts.append("")
        cross = self.crossover()
        if not cross.empty:
            key = next(iter(self.sections[0].point))
            parts.append(f"## Crossover: {self.crossover_measure} by {key}\n")
            parts.append(cross.to_markdown(floatfmt=",.2f" if self.against_naive else ",.0f") + "\n")
        return "\n".join(parts)

    @property
    def against_naive(self) -> bool:
        """Every sweep point has the naive baseline: the crossover is of speed-ups; else of tokens/s."""
        swept = [s for s in self.sections if s.point]
        return bool(swept) and all((s.summary["strategy"] == BASELINE).any() for s in swept)

    @property
    def crossover_measure(self) -> str:
        return "speed-up against naive" if self.against_naive else "median tokens/s"

    def crossover(self) -> pd.DataFrame:
        """Speed-up against naive (median tokens/s ratio), or without naive the median tokens/s, per strategy
        (rows) and sweep point (columns)."""
        swept = [s for s in self.sections if s.point]
        if not swept:
            return pd.DataFrame()
        column = "speedup_vs_naive" if self.against_naive else "tokens_per_s"
        cells = {}
        for s in swept:
            label = ", ".join(f"{k}={v}" for k, v in s.point.items())
            cells[label] = s.summary.set_index("strategy")[column]
        return pd.DataFrame(cells).round(2)

    def files(self) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {"summary.md": self.markdown()}
        frames = [s.summary.assign(suite=s.suite, suite_hash=s.suite_hash, device=s.device, machine=s.machine)
                  for s in self.sections]
        out["summary.csv"] = pd.concat(frames).to_csv(index=False)
        for i, s in enumerate(self.sections):
            tag = s.file_tag(i, len(self.sections))
            for name, png in plots(PlotData(s.title, s.suite, s.device, s.summary, s.rows, s.config)).items():
                out[f"{name}{tag}.png"] = png
        if any(s.point for s in self.sections):
            swept = [(s.point, s.summary) for s in self.sections if s.point]
            out["crossover.png"] = crossover_plot(self.suite, swept, self.against_naive, self.crossover_measure)
        return out


def build_reports(rows: pd.DataFrame, pool: bool = False) -> list[SuiteReport]:
    """One report per suite; one section per (configuration, device, hardware, code): runs of different
    configurations, hardware, lstmbench commits or torch versions are never averaged together, unless `pool`
    (then the code is not a key, and the section's title names every commit and version it holds). Hosts of
    the same hardware (the nodes of a sharded cluster job, `run --shard K/N`) are merged, and named."""
    envs = rows["env"] if "env" in rows else [{}] * len(rows)
    rows = rows.assign(machine=[hardware(env) for env in envs],
                       host=[(env.get("host") or "?") if isinstance(env, dict) else "?" for env in envs],
                       code=[f"{code(env)}, {software(env)}" for env in envs])
    reports = []
    for suite, suite_rows in rows.groupby("suite", sort=True):
        sections = []
        keys = ["suite_hash", "device", "machine"] + ([] if pool else ["code"])
        for key, group in suite_rows.groupby(keys, sort=False):
            suite_hash, device, machine = key[:3]
            section = _section(str(suite), str(suite_hash), str(device), group, machine)
            section.hosts = ", ".join(sorted(set(group["host"])))
            codes = sorted(set(group["code"]))
            section.code = "; ".join(codes) if len(codes) == 1 else f"POOLED: {' + '.join(codes)}"
            section.pooled = len(codes) > 1
            sections.append(section)
        reports.append(SuiteReport(str(suite), sections))
    return reports


def _section(suite: str, suite_hash: str, device: str, rows: pd.DataFrame, machine: str = "") -> Section:
    config = rows["config"].iloc[-1] if "config" in rows else {}
    order = [s["name"] for s in config.get("strategies", [])] or list(dict.fromkeys(rows["strategy"]))
    order += [s for s in dict.fromkeys(rows["strategy"]) if s not in order]
    # rows measured while other processes took the CPU are left out of every figure (the notes say which)
    ok, disturbed = split_disturbed(rows[rows["status"] == "ok"])
    records = []
    for name in order:
        mine, good = rows[rows["strategy"] == name], ok[ok["strategy"] == name]
        if mine.empty:
            continue
        tps = spread(good["tokens_per_s"])
        tps_ci = median_interval(good["tokens_per_s"])
        eff = median_interval(good["efficiency"].dropna())  # schema 1's meant another quantity: gone (migrate)
        acc, acc_sd = mean_std(good["eval_accuracy"].dropna())
        exact, exact_sd = mean_std(good["eval_accuracy_exact"].dropna())
        reached = good["time_to_target_s"].dropna()
        # runs with a target (rows that predate the field: the suite's): a miss counts as never (infinite)
        aimed = good["target_accuracy"].notna() | bool(config.get("train", {}).get("target_accuracy"))
        what, claim = computes(mine["computation_note"].iloc[-1], good, reference=name == IDEAL.name)
        records.append({
            "strategy": name,
            "computes": what, "computes_kind": what.kind, "computes_claim": claim,
            "lstm_kernel": "/".join(sorted(set(good["lstm_kernel"].dropna()))) or "-",
            "runs_ok": len(good), "runs_failed": int((mine["status"] != "ok").sum()),
            "runs_disturbed": int((disturbed["strategy"] == name).sum()),
            "tokens_per_s": tps.median, "tokens_per_s_low": tps_ci.low, "tokens_per_s_high": tps_ci.high,
            "tokens_per_s_interval": tps_ci.kind if tps_ci.n > 1 else "", "tokens_per_s_coverage": tps_ci.coverage,
            "tokens_per_s_min": tps.low, "tokens_per_s_max": tps.high,
            "tokens_per_s_iqr_rel": tps.iqr_rel, "unstable": tps.unstable,
            "tokens_per_s_text": tps_ci.text(),
            "efficiency": eff.median, "efficiency_low": eff.low, "efficiency_high": eff.high,
            "efficiency_text": _percent_text(eff),
            "samples_per_s": spread(good["samples_per_s"]).median,
            "pad_fraction": spread(good["pad_fraction"]).median,
            "data_time_fraction": spread(good["data_time_fraction"]).median,
            "train_time_s": spread(good["train_time_s"]).median,
            "train_time_cold_s": spread(good["train_time_cold_s"].dropna()).median,
            "distinct_shapes": spread(good["distinct_shapes"].dropna()).median,
            "step_time_median_s": spread(good["step_time_median_s"]).median,
            "train_mem_mib": spread(good["train_mem_bytes"].dropna()).median / 2**20,
            "peak_mem_mib": spread(good["peak_mem_bytes"]).median / 2**20,
            "reserved_mem_mib": spread(good["peak_mem_reserved_bytes"].dropna()).median / 2**20,
            "run_mem_mib": spread(good["peak_mem_bytes"] - good["baseline_rss_bytes"]).median / 2**20
            if device == "cpu" else np.nan,
            "eval_accuracy": acc, "eval_accuracy_sd": acc_sd,
            "eval_accuracy_exact": exact, "eval_accuracy_exact_sd": exact_sd,
            "time_to_target_s": _median_missed(good, "time_to_target_s", aimed), "reached_target": len(reached),
            "time_to_target_cold_s": _median_missed(good, "time_to_target_cold_s", aimed),
            "time_to_target_with_eval_s": _median_missed(good, "time_to_target_with_eval_s", aimed),
            "time_to_target_resolution_s": spread(good["time_to_target_resolution_s"].dropna()).median,
            "time_to_target_robust_s": spread(good["time_to_target_robust_s"].dropna()).median,
            "world_size": int(good["world_size"].fillna(1).max()) if len(good) else 1,
            "straggler_wait_fraction": spread(good["straggler_wait_fraction"].dropna()).median,
            "planned_wait_fraction": spread(good["planned_wait_fraction"].dropna()).median,
            "deal": "/".join(sorted(set(mine["deal"].fillna("")) - {""})) or "-",
        })
    summary = pd.DataFrame(records)
    verdicts = accuracy_verdicts(ok, summary)
    summary["accuracy_vs_best"] = [verdicts.get(name, "-") for name in summary["strategy"]]
    summary["accuracy_kind"] = [kind_of(v, Accuracy.NONE) for v in summary["accuracy_vs_best"]]
    base = summary.loc[summary["strategy"] == BASELINE, "tokens_per_s"]
    summary["speedup_vs_naive"] = summary["tokens_per_s"] / base.iloc[0] if len(base) else np.nan
    point = rows["sweep"].iloc[-1] if "sweep" in rows and isinstance(rows["sweep"].iloc[-1], dict) else {}
    return Section(suite, suite_hash, device, summary, _notes(rows, ok, disturbed), config, ok, machine, point,
                   disturbed=disturbed)


def computes(note: str, ok: pd.DataFrame, reference: bool = False) -> tuple[Verdict, str]:
    """What the strategy computes, as its runs' own checks on their timed path found it: 'exact' only when each
    run matched per-sequence processing on its kernel and precision (`verified` in the rows). Also its claim
    without the check's figures ('exact', 'truncates to 64 tokens'), for the recommendation's sentence."""
    verdicts = ok["verified"].dropna()
    kind = Computes.REFERENCE if reference else Computes.CHANGES if note else Computes.EXACT
    if reference:  # the ideal: no claim to check
        return Verdict(kind, note), note
    if verdicts.empty:
        claim = (note or "exact") + " (not checked in the runs)"
        return Verdict(kind, claim), claim
    worst = max(ok["verify_loss_rel_error"].max(), ok["verify_grad_rel_error"].max())
    how = f"{'/'.join(sorted(set(ok['verify_precision'].dropna())))} error {worst:.0e}"
    if (verdicts == "MISMATCH").any():
        text = f"MISMATCH on the timed path ({how} > tolerance {ok['verify_tolerance'].max():.0e})"
        return Verdict(Computes.MISMATCH, text), text
    return Verdict(kind, f"{note or 'exact'} (verified, {how})"), note or "exact"


def _percent_text(i: Interval) -> str:
    """'98% [range 95-101%]' for an efficiency interval; '-' without one."""
    if i.n == 0:
        return "-"
    if i.n == 1:
        return f"{i.median:.0%} (1 run)"
    return f"{i.median:.0%} [{i.kind} {100 * i.low:.0f}-{i.high:.0%}]"


def left_out_sentence(disturbed: pd.DataFrame, runs: int) -> str:
    """'' or why rows were left out: 'LEFT OUT: 2 of 12 runs, measured while other processes took the CPU
    (no figure here uses them): mask seed 1: the run's threads waited for a CPU 31% of the time; ...'."""
    if disturbed.empty:
        return ""
    why = [f"{r['strategy']} seed {r['seed']}: "
           f"{busy_warning(r['env'], waits_count=not r.get('loader_workers')) or 'busy'}"
           for r in disturbed.to_dict("records")]
    return (f"LEFT OUT: {len(disturbed)} of {runs} runs, measured while other processes took the CPU (no figure "
            f"here uses them; `lstmbench run --resume` on a quiet machine measures them again): "
            + "; ".join(why))


def _info(text: str) -> Verdict:
    return Verdict(Level.INFO, text)


def _warning(text: str) -> Verdict:
    return Verdict(Level.WARNING, text)


def _notes(rows: pd.DataFrame, ok: pd.DataFrame, disturbed: pd.DataFrame | None = None) -> list[Verdict]:
    notes = []
    disturbed = disturbed if disturbed is not None else ok.iloc[:0]
    seeds = sorted(ok["seed"].unique())
    same_init = all(ok.loc[ok["seed"] == s, "init_checksum"].nunique() == 1 for s in seeds)
    if not seeds:
        notes.append(_warning("No run succeeded: nothing was measured."))
    elif same_init:
        notes.append(_info(f"Initial weights identical across strategies for each of the {len(seeds)} seed(s) "
                     f"(init_checksum per seed: {', '.join(ok.groupby('seed')['init_checksum'].first())})."))
    else:
        notes.append(_warning("WARNING: initial weights differ between strategies of the same seed; the runs are "
                              "not comparable."))
    data_sums = ok["data_checksum"].replace("", np.nan)
    if data_sums.notna().any():  # rows since schema 5 carry the data they trained on
        if all(data_sums[ok["seed"] == s].nunique() <= 1 for s in seeds):
            notes.append(_info(f"Training and held-out data identical across strategies for each seed (data_checksum "
                               f"per seed: {', '.join(data_sums.groupby(ok['seed']).first().dropna())})."))
        else:
            notes.append(_warning("WARNING: the data differ between strategies of the same seed (data_checksum); the "
                                  "runs are not comparable."))
    stability = stability_note(ok)
    if stability:
        notes.append(stability)
    env = ok["env"].iloc[-1] if len(ok) else {}
    if env:
        notes.append(_info(f"Measured on {env.get('cpu')} ({env.get('threads')} threads), device "
                           f"{env.get('device_name')}, torch {env.get('torch')}, lstmbench {env.get('lstmbench')} at "
                           f"{env.get('git_commit')}."))
    if (ok["world_size"].fillna(1) > 1).any():
        notes.append(_info("DDP runs: batch_size is per rank; tokens/s is the job's (all ranks' real tokens over the "
                     "slowest rank's training time). straggler wait % = the share of rank step time spent waiting "
                     "at the all-reduce for the slowest rank (per step: slowest rank's compute - own compute, "
                     "compute measured to the last gradient bucket ready); planned wait % = the same estimated "
                     "from the plan's padded cells alone. deal: per_rank = each rank batches its own shard; "
                     "balanced = batches formed globally and dealt by cost."))
    keras = ok[ok["framework"] == "keras"]
    if len(keras):
        versions = sorted({f"Keras {env.get('keras')} on {env.get('keras_backend')} {env.get('keras_backend_version')}"
                           for env in keras["env"] if isinstance(env, dict)})
        notes.append(_info(f"Keras strategies ({', '.join(sorted(keras['strategy'].unique()))}): the same batches "
                           "and initial weights as the PyTorch strategies, trained by Keras's train_on_batch in a "
                           f"fresh interpreter ({'; '.join(versions)}); kernel: the path Keras's LSTM took "
                           "(keras-while-loop: TensorFlow's tf.while_loop; keras-python-loop: the torch backend's "
                           "loop over steps; keras-scan: JAX's lax.scan; keras-cudnn: cuDNN); 'exact' evaluates the "
                           "trained weights in PyTorch. Their train MiB is the growth of the process's resident "
                           "memory over the timed steps (Keras's tensors are not torch's to count); no unpadded "
                           "reference is timed for them."))
    left_out = left_out_sentence(disturbed, len(ok) + len(disturbed))
    if left_out:  # DDP ranks are each other's "other processes": only one-process runs are judged
        notes.append(_info(left_out))
    for _, r in rows[rows["status"] != "ok"].iterrows():
        notes.append(_warning(f"FAILED: {r['strategy']} seed {r['seed']}: {r['status']}: {r['error']}"))
    notes.append(_info("tokens/s counts real (non-padding) tokens per second of training steps, warm-up and evaluation "
                 "excluded: the median over seeds, with an interval for it that covers the true median at the rate "
                 f"it states (order statistics, no distribution assumed): a 95% CI needs {runs_for_ci()} or more runs; "
                 "with fewer it is the range of the runs, which covers the median 1 - 2 x 0.5^n of the time (75% at "
                 f"3 runs, 87.5% at 4). 'unstable' marks an IQR over {UNSTABLE_IQR:.0%} of the median. vs unpadded "
                 "= the run's tokens/s / the tokens/s of a sample of its own first epoch's batches (an eighth of its "
                 "steps, at least 16, spread over the epoch) with every batch's real tokens cut into equal rows (no "
                 "padding, same examples and batch sizes), measured in the same process right after training; the "
                 "median over seeds and its interval. Accuracy is mean ± sd over "
                 "seeds: 'own path' through the strategy's inference path, 'exact' the same weights evaluated per "
                 "sequence. train MiB: the tensors of training at their peak (weights, gradients, Adam state, the "
                 "batch, activations): on CUDA the allocator's peak over the timed steps, on CPU counted op by op "
                 "over a step of the largest batches. peak MiB: on CPU the process's peak resident memory over the "
                 "timed steps (+ what the run added to Python and torch), on CUDA the allocator's reserved peak; "
                 "evaluations are left out of both."))
    return notes


def stability_note(ok: pd.DataFrame) -> Verdict | str:
    """`run --until-stable`: which strategies' throughput became stable, after how many seeds, and which ran
    out of seeds first. '' when the rows were not made so."""
    marks = ok["until_stable"].fillna("")
    if not (marks != "").any():
        return ""
    percent = ok["until_stable_percent"].dropna()
    runs = ok.groupby("strategy")["seed"].nunique()
    last = ok[marks != ""].groupby("strategy")["until_stable"].last()
    stable = [f"{s} ({runs[s]} seeds)" for s in last.index if last[s] == "stable"]
    limit = [f"{s} ({runs[s]} seeds)" for s in last.index if last[s] == "limit"]
    text = f"Until stable (tokens/s within +-{percent.iloc[-1]:g}% of the median):"
    if stable:
        text += f" stable: {', '.join(stable)}."
    if limit:
        text += f" Not stable at the seed limit: {', '.join(limit)}."
    return Verdict(Level.NOTICE if limit else Level.INFO, text)


def _median_missed(good: pd.DataFrame, column: str, aimed: pd.Series) -> float:
    """The median over the runs that had a target, a run that missed it counting as infinitely slow (so 2 of 3
    runs reaching it gives the slower of the two, 1 of 3 gives inf); NaN when no run had a target."""
    values = pd.to_numeric(good[column], errors="coerce")
    reached = good["time_to_target_s"].notna().to_numpy()
    if reached.any() and values[reached].isna().all():  # the rows predate the field (cold, with evaluations)
        return np.nan
    values[~reached] = np.inf  # missed: never
    values = values[aimed.to_numpy()].dropna()  # reached, but the row predates the field: unknown, left out
    return float(np.median(values)) if len(values) else np.nan


def ranking(summary: pd.DataFrame, target: float | None, cap: float | None = None) -> list[str]:
    """Strategies ranked by median time to the target accuracy (MLPerf's score), a run that missed it counted as
    never reaching it; ties (never) broken by how many runs reached it."""
    if not target:
        return []
    rows = summary[summary["strategy"] != IDEAL.name].assign(_miss=lambda d: -d["reached_target"])
    rows = rows.sort_values(["time_to_target_s", "_miss"], na_position="last")
    within = f" within the {cap:g} s cap" if cap else ""
    lines = [f"Time to accuracy {target:g} (median training seconds over the runs, one that never reached it "
             f"counted as never; with evaluations: MLPerf's clock, first shapes and evaluations in):"]
    for i, r in enumerate(rows.itertuples(), 1):
        if r.reached_target == 0:
            lines.append(f"  {i}. {r.strategy}: never reached{within} (0/{r.runs_ok} runs)")
            continue
        if not np.isfinite(r.time_to_target_s):
            lines.append(f"  {i}. {r.strategy}: not reached by most runs{within} ({r.reached_target}/{r.runs_ok})")
            continue
        with_eval = r.time_to_target_with_eval_s
        extra = "" if np.isnan(with_eval) else f"; {with_eval:.2f} s with evaluations"
        extra += "" if np.isnan(r.time_to_target_resolution_s) else f", read to {r.time_to_target_resolution_s:.2f} s"
        lines.append(f"  {i}. {r.strategy}: {r.time_to_target_s:.2f} s ({r.reached_target}/{r.runs_ok} runs{extra})")
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
        "tokens/s (median [range or 95% CI])": [t + (" unstable" if u else "")
                                                for t, u in zip(summary["tokens_per_s_text"], summary["unstable"])],
        "vs naive": ["-" if np.isnan(x) else f"{x:.2f}x" for x in summary["speedup_vs_naive"]],
        "vs unpadded (same batches)": summary["efficiency_text"],
        "pad %": [_pct(x) for x in summary["pad_fraction"]],
        "data prep %": [_pct(x, 2) for x in summary["data_time_fraction"]],
        "train MiB": [_mib(x) for x in summary["train_mem_mib"]],
        "peak MiB": [_mem(p, r, v) for p, r, v in zip(summary["peak_mem_mib"], summary["run_mem_mib"],
                                                      summary["reserved_mem_mib"])],
        "accuracy, own path": [pm(m, s) for m, s in zip(summary["eval_accuracy"], summary["eval_accuracy_sd"])],
        "accuracy, exact": [pm(m, s) for m, s in zip(summary["eval_accuracy_exact"],
                                                      summary["eval_accuracy_exact_sd"])],
        "accuracy vs best exact": summary["accuracy_vs_best"],
        "shapes": ["-" if np.isnan(x) else f"{x:.0f}" for x in summary["distinct_shapes"]],
        "time to target s, warm / cold": ["-" if n == 0 else ("missed" if np.isinf(t) else _warm_cold(t, c))
                                          + ("" if n == k else f" ({n}/{k})")
                                          for t, c, n, k in zip(summary["time_to_target_s"],
                                                                summary["time_to_target_cold_s"],
                                                                summary["reached_target"], summary["runs_ok"])],
        # tokens to the target (the same on every run of a seed) over the median window's tokens/s
        "time to target s, robust": ["-" if np.isnan(x) else f"{x:.2f}"
                                     for x in summary.get("time_to_target_robust_s", [np.nan] * len(summary))],
        "train s, warm / cold": [_warm_cold(w, c) for w, c in zip(summary["train_time_s"],
                                                                   summary["train_time_cold_s"])],
    })
    if "world_size" in summary and (summary["world_size"] > 1).any():  # a DDP section
        at = out.columns.get_loc("kernel") + 1
        out.insert(at, "ranks", summary["world_size"])
        out.insert(at + 1, "deal", summary["deal"])
        out.insert(at + 2, "straggler wait %", [_pct(x) for x in summary["straggler_wait_fraction"]])
        out.insert(at + 3, "planned wait %", [_pct(x) for x in summary["planned_wait_fraction"]])
    return out


def _warm_cold(warm: float, cold: float) -> str:
    """Steady state, and what a first run pays with every new batch shape's set-up (rows before schema 3: warm)."""
    if np.isnan(warm):
        return "-"
    return f"{warm:.2f}" + ("" if not np.isfinite(cold) else f" / {cold:.2f}")


def _mib(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:,.1f}" if x < 10 else f"{x:,.0f}"


def _mem(peak: float, run: float, reserved: float) -> str:
    """CPU: the process's peak, and what the run added to it (the rest is Python and torch). CUDA: the caching
    allocator's reserved peak (what fragmentation costs beyond the allocated peak), else the allocated one."""
    if not np.isnan(reserved):
        return _mib(reserved) + " reserved"
    if np.isnan(peak):
        return "-"
    return f"{peak:,.0f}" + ("" if np.isnan(run) else f" (+{run:,.0f})")


def _pct(x: float, digits: int = 1) -> str:
    return "-" if np.isnan(x) else f"{100 * x:.{digits}f}"
