"""Recommend: which strategy to train with, per report section, from the rows that measured it.

Built on the report (report.build_reports): per section, the strategies other than the ideal that have ok runs
are the candidates; those that lost accuracy (below the best exact strategy by the paired test of
quality.accuracy_verdicts), whose runs all failed, whose timed path did not compute what they claim, or that
never reached the suite's target are ruled out; of the rest, the fastest to the target wins (the median run,
a miss counted as never, ties broken by the runs that reached it), or without a target the highest median
tokens/s. When the results cannot decide (no exact strategy to check accuracy against, or too few seeds in
common for the paired test), the recommendation says so instead of naming a winner. Nothing here prints.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..results import code, hardware, load_rows, software
from ..suite import IDEAL, PRESETS
from .quality import QUALITY_ALPHA
from .summary import Section, build_reports
from .verdicts import Accuracy, Computes

STATUS_WORDS = {"oom": "out of memory", "diverged": "diverged (the training loss became NaN or infinite)",
                "crashed": "crashed", "error": "failed"}
OPTION_DEFAULTS = {"max_len": 0, "max_tokens": 0, "boundaries": (), "megabatch": 0, "pad_multiple": 0,
                   "deal": "per_rank"}
MIN_SEEDS = 3  # what a recommendation asks for at the least: a median and a range need 3 runs


@dataclass
class Recommendation:
    """One report section's answer. `winner` is None when `undecided` says why the results cannot decide."""
    suite: str
    title: str  # the report section's title: suite, device, machine, configuration, code
    device: str
    machine: str
    winner: str | None
    why: str  # one sentence: what made the winner win ('' when undecided)
    runner_up: str | None
    runner_up_cost: str  # one sentence: what picking the runner-up instead costs ('' without one)
    ruled_out: list[tuple[str, str]] = field(default_factory=list)  # (strategy, reason)
    undecided: str | None = None
    strategy: dict = field(default_factory=dict)  # the winner's composition, from the suite (non-default options)
    batch_size: int = 0
    distributed: bool = False  # the section's runs were DDP jobs (batch_size per rank)
    bidirectional: bool = False  # the suite's LSTM is bidirectional: the snippet reads it with bidirectional_lstm
    disturbed: list[tuple[str, int]] = field(default_factory=list)  # (strategy, seed) of runs left out: busy machine
    too_busy: bool = False  # undecided because too few runs of some strategy were measured on a quiet machine


@dataclass
class Recommendations:
    recommendations: list[Recommendation]
    skipped: list[str]  # one sentence per file or line of the results that could not be read (storage's)


def recommend(paths: Iterable[str | Path], pool: bool = False) -> Recommendations:
    """Recommendations from result files or folders, as `lstmbench report` reads them; a missing path, no rows
    or an unreadable file raise ResultsError."""
    loaded = load_rows(list(paths))
    return Recommendations(recommend_rows(loaded.rows, pool=pool), loaded.skipped)


def recommend_rows(rows: pd.DataFrame, pool: bool = False) -> list[Recommendation]:
    """One recommendation per report section (suite, configuration, device, hardware, code) of these rows."""
    envs = rows["env"] if "env" in rows else [{}] * len(rows)
    keyed = rows.assign(_machine=[hardware(e) for e in envs], _code=[f"{code(e)}, {software(e)}" for e in envs])
    failed = keyed[keyed["status"] != "ok"]
    out = []
    for suite_report in build_reports(rows, pool=pool):
        for s in suite_report.sections:
            mine = failed[(failed["suite"].astype(str) == s.suite) & (failed["suite_hash"].astype(str) == s.suite_hash)
                          & (failed["device"].astype(str) == s.device) & (failed["_machine"] == s.machine)]
            if not pool:
                mine = mine[mine["_code"] == s.code]
            out.append(recommend_section(s, mine))
    return out


def recommend_section(section: Section, failed: pd.DataFrame | None = None) -> Recommendation:
    """The recommendation for one report section; `failed`: the section's rows whose status is not ok."""
    failed = failed if failed is not None else pd.DataFrame(columns=["strategy", "status", "error"])
    summary = section.summary
    train = section.config.get("train", {}) if isinstance(section.config, dict) else {}
    target = train.get("target_accuracy") or None
    cap = train.get("max_time_s") if train.get("until_target") else None
    within = f"within the {cap:g} s cap" if cap else f"in {train['epochs']} epochs" if train.get("epochs") else ""
    rows = summary[summary["strategy"] != IDEAL.name]
    disturbed = [(str(r["strategy"]), int(r["seed"])) for r in section.disturbed.to_dict("records")]
    short = [r["strategy"] for r in rows.to_dict("records") if _too_few_quiet(r)]
    if short:  # never decided on runs a busy machine measured, nor on the few quiet ones left
        rec = Recommendation(section.suite, section.title, section.device, section.machine, None, "", None, "",
                             disturbed=disturbed, too_busy=True)
        rec.undecided = (f"the results cannot decide: {len(disturbed)} of {len(section.rows) + len(disturbed)} runs "
                         f"were measured while other processes took the CPU, which leaves too few quiet runs of "
                         f"{', '.join(short)} (at least 2, and half of its runs); run the suite again on a quieter "
                         f"machine (`lstmbench run SUITE --resume --out FOLDER` measures the left-out runs again)")
        return rec
    exact = (rows["computes_kind"] == Computes.EXACT) & (rows["runs_ok"] > 0)
    best = rows.loc[rows["accuracy_kind"] == Accuracy.BEST, "strategy"]
    best_name = best.iloc[0] if len(best) else None

    ruled: list[tuple[str, str]] = []
    candidates = []
    for r in rows.to_dict("records"):
        name = r["strategy"]
        if r["runs_ok"] == 0:
            ruled.append((name, _failure(failed[failed["strategy"] == name], r["runs_failed"])))
            continue
        reasons = []
        if r["computes_kind"] == Computes.MISMATCH:
            reasons.append(f"its runs' check of the timed path failed: {r['computes']}")
        if r["accuracy_kind"] == Accuracy.BELOW:
            reasons.append(f"accuracy lost: {r['accuracy_vs_best']}")
        if target and r["reached_target"] == 0 and not np.isnan(r["time_to_target_s"]):
            reasons.append(f"never reached {target:g}{' ' + within if within else ''} (0/{r['runs_ok']} runs)")
        if reasons:
            ruled.append((name, "; ".join(reasons)))
        else:
            candidates.append(r)

    by_target = bool(target) and any(not np.isnan(r["time_to_target_s"]) for r in candidates)
    order = sorted(candidates, key=lambda r: (np.nan_to_num(r["time_to_target_s"], nan=math.inf, posinf=math.inf),
                                              -r["reached_target"], -r["tokens_per_s"]) if by_target
                   else (-r["tokens_per_s"],))
    # "without losing accuracy": a strategy that changes the computation and falls short of the best exact
    # strategy, with too few seeds for the paired test to decide, does not win over the fastest exact one
    demoted = None
    if order and order[0]["computes_kind"] != Computes.EXACT and order[0]["accuracy_kind"] == Accuracy.UNDECIDED:
        fastest_exact = next((r for r in order if r["computes_kind"] == Computes.EXACT), None)
        if fastest_exact is not None:
            demoted = order.pop(0)
            order.insert(1 if order[0] is fastest_exact else 0, demoted)
            order.remove(fastest_exact)
            order.insert(0, fastest_exact)
    rec = Recommendation(section.suite, section.title, section.device, section.machine, None, "", None, "",
                         ruled, batch_size=int(train.get("batch_size") or 0), disturbed=disturbed,
                         distributed=bool((summary.get("world_size", pd.Series([1])) > 1).any()))
    leader = order[0] if order else None
    undecided = _undecided(section, rows, exact, bool(target), len(order))
    if undecided is None and leader is None:
        reached = rows.loc[rows["runs_ok"] > 0, "reached_target"]
        undecided = ("the results cannot decide: no strategy other than the ideal has an ok run" if not ruled else
                     f"the results cannot decide: no strategy reached {target:g}{' ' + within if within else ''}; "
                     f"lower train.target_accuracy or train longer" if target and len(reached) and
                     not reached.any() else "the results cannot decide: every strategy measured was ruled out")
    if undecided:
        if leader is not None:
            undecided += (f"; the fastest so far, its accuracy unchecked: {leader['strategy']} "
                          f"({_measure(leader, target if by_target else None, lead=False)})")
        rec.undecided = undecided
        return rec

    rec.winner = leader["strategy"]
    rec.why = f"{_head(leader, len(order), bool(ruled), target if by_target else None, demoted is not None)}: " + \
              f"{_measure(leader, target if by_target else None, lead=len(order) > 1)}" + \
              f", {_computes(leader)}, accuracy {leader['eval_accuracy']:.3f}" + \
              _against_best(leader, best_name) + _failures(leader, failed)
    if len(order) > 1:
        second = order[1]
        rec.runner_up = second["strategy"]
        rec.runner_up_cost = _cost(second, leader, target if by_target else None)
        if second is demoted:
            rec.runner_up_cost += (f". It is faster, but {_computes(second)}, and its accuracy shortfall "
                                   f"against the best exact strategy is not decided by these seeds: "
                                   f"{second['accuracy_vs_best']}")
    rec.strategy = _composition(section.config, rec.winner)
    rec.bidirectional = bool((section.config.get("model") or {}).get("bidirectional"))
    return rec


def _undecided(section: Section, rows: pd.DataFrame, exact: pd.Series, has_target: bool,
               candidates: int) -> str | None:
    """Why the results cannot decide, or None: no exact strategy ran (no accuracy to check against), or the
    paired accuracy test has fewer than 2 seeds in common to pair."""
    inexact = [n for n, e in zip(rows["strategy"], exact) if not e and n in set(section.rows["strategy"])]
    failed_exact = [n for n, c, ok in zip(rows["strategy"], rows["computes_kind"], rows["runs_ok"])
                    if c == Computes.EXACT and ok == 0]
    if not exact.any() and failed_exact:  # in the suite, but every run of them failed: the errors say why
        return (f"the results cannot decide: every run of the exact strateg{'ies' if len(failed_exact) > 1 else 'y'} "
                f"({', '.join(failed_exact)}) failed, so nothing checks the accuracy against the exact computation; "
                "see why below, and run them again once that is fixed")
    if not exact.any():
        what = f" the accuracy of {', '.join(inexact)}" if inexact else " the accuracy"
        return (f"the results cannot decide: no exact strategy (mask, pack, bucket, ...) has an ok run, so nothing "
                f"checks{what} against the exact computation; add one to the suite")
    with_acc = rows.loc[rows["eval_accuracy"].notna() & (rows["runs_ok"] > 0), "strategy"].tolist()
    if len(with_acc) < 2 or candidates == 0:
        return None
    ok = section.rows[section.rows["strategy"].isin(with_acc)].drop_duplicates(["strategy", "seed"], keep="last")
    common = len(ok.pivot(index="seed", columns="strategy", values="eval_accuracy")
                 .reindex(columns=with_acc).dropna())
    if common >= 2:
        return None
    need = fewest_seeds(len(with_acc), 2 if has_target else 1)
    seeds = ",".join(str(i) for i in range(need))
    return (f"the results cannot decide: the strategies have {common} seed{'s' if common != 1 else ''} in common, "
            f"and the paired accuracy test needs at least 2 to run ({need} to find a shortfall among "
            f"{len(with_acc)} strategies); run at least {need} seeds (--set seeds=[{seeds}])")


def _too_few_quiet(r: dict) -> bool:
    """A strategy some of whose runs were left out as disturbed, with fewer than 2 quiet ones or under half."""
    out = int(r.get("runs_disturbed") or 0)
    return out > 0 and r["runs_ok"] < max(2, (r["runs_ok"] + out + 1) // 2)


def fewest_seeds(strategies: int, families: int = 1) -> int:
    """The seeds to ask for: at least MIN_SEEDS, and enough that the permutation test of quality could reach
    its level at all (its smallest p-value with n seeds of k strategies is about (k!)^-(n-1))."""
    alpha = QUALITY_ALPHA / families
    n = 2
    while math.factorial(max(2, strategies)) ** -(n - 1) > alpha:
        n += 1
    return max(MIN_SEEDS, n)


def _seconds(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _measure(r: dict, target: float | None, lead: bool = True) -> str:
    """'29.3 s median over 3 runs (3/3 reached)', or tokens/s without a target."""
    n = r["runs_ok"]
    if target is None:
        return f"{r['tokens_per_s']:,.0f} tokens/s median over {n} run{'s' if n != 1 else ''}"
    reached = f"{r['reached_target']}/{n} reached"
    if np.isinf(r["time_to_target_s"]):
        return f"most runs never reached {target:g} ({reached})"
    where = "" if lead else f" to {target:g} held-out accuracy"
    return f"{_seconds(r['time_to_target_s'])} s median{where} over {n} run{'s' if n != 1 else ''} ({reached})"


def _head(leader: dict, candidates: int, ruled: bool, target: float | None, exact_only: bool) -> str:
    """What made the winner win, before its figures: 'fastest to 0.9 held-out accuracy', 'highest throughput of
    the exact strategies' (`exact_only`: a faster strategy that changes the computation was put behind it)."""
    if candidates == 1:
        return f"the only strategy {'left' if ruled else 'measured'}"
    if target is None:
        return "highest throughput" + (" of the exact strategies" if exact_only else "")
    if np.isinf(leader["time_to_target_s"]):
        return f"closest to {target:g} held-out accuracy"
    return f"fastest {'exact strategy ' if exact_only else ''}to {target:g} held-out accuracy"


def _computes(r: dict) -> str:
    """'exact', or 'changes the computation: truncates to 64 tokens' (the runs' check left out)."""
    claim = r["computes_claim"]
    return claim if r["computes_kind"] == Computes.EXACT else f"changes the computation: {claim}"


def _against_best(r: dict, best: str | None) -> str:
    if r["accuracy_kind"] == Accuracy.BEST:
        return ", the best exact strategy's"
    if not best or r["accuracy_kind"] == Accuracy.NONE:
        return ""
    return f", not significantly below the best exact strategy {best}: {r['accuracy_vs_best']}"


def _failures(r: dict, failed: pd.DataFrame) -> str:
    if not r["runs_failed"]:
        return ""
    mine = failed[failed["strategy"] == r["strategy"]]
    kinds = ", ".join(f"{STATUS_WORDS.get(s, s)}: {c}" for s, c in mine["status"].value_counts().items())
    total = r["runs_ok"] + r["runs_failed"]
    return f"; {r['runs_failed']} of its {total} runs failed" + (f" ({kinds})" if kinds else "")


def _failure(mine: pd.DataFrame, count: int) -> str:
    """Why every run of a strategy failed, from its rows' status and error."""
    if mine.empty:
        return f"all {count} runs failed"
    n = len(mine)
    counts = mine["status"].value_counts()
    kinds = ", ".join(f"{STATUS_WORDS.get(s, s)} ({c}/{n})" for s, c in counts.items())
    errors = mine.loc[mine["status"] == counts.index[0], "error"] if "error" in mine else pd.Series([], dtype=str)
    error = next((" ".join(str(e).split()) for e in errors if isinstance(e, str) and e.strip()), "")
    error = error if len(error) <= 160 else error[:157] + "..."
    return f"all {n} run{'s' if n != 1 else ''} failed: {kinds}" + (f": {error}" if error else "")


def _cost(second: dict, first: dict, target: float | None) -> str:
    """What picking the runner-up instead costs, against the winner, in one sentence."""
    name = second["strategy"]
    accuracy = f"; accuracy {second['eval_accuracy']:.3f} vs {first['eval_accuracy']:.3f}"
    if target is None:
        fewer = 1 - second["tokens_per_s"] / first["tokens_per_s"]
        word = "fewer" if fewer >= 0 else "more"
        return (f"{name}: {abs(fewer):.0%} {word} tokens/s ({second['tokens_per_s']:,.0f} vs "
                f"{first['tokens_per_s']:,.0f} median)" + accuracy)
    t2, t1 = second["time_to_target_s"], first["time_to_target_s"]
    runs = (f", {second['reached_target']}/{second['runs_ok']} runs reached vs "
            f"{first['reached_target']}/{first['runs_ok']}"
            if (second["reached_target"], second["runs_ok"]) != (first["reached_target"], first["runs_ok"]) else "")
    if np.isinf(t2):
        return (f"{name}: most runs never reached {target:g} ({second['reached_target']}/{second['runs_ok']} "
                f"reached vs {first['reached_target']}/{first['runs_ok']})" + accuracy)
    slower = t2 - t1
    word = "slower" if slower >= 0 else "faster"
    return (f"{name}: {_seconds(abs(slower))} s ({abs(slower) / t1:.0%}) {word} to {target:g} ({_seconds(t2)} vs "
            f"{_seconds(t1)} s median{runs})" + accuracy)


def _composition(config: dict, name: str) -> dict:
    """The strategy's composition from the suite's resolved strategies: name, batching, padding, readout, and
    the options not at their defaults."""
    entries = [s for s in (config.get("strategies") or []) if isinstance(s, dict) and s.get("name") == name]
    spec: dict[str, Any] = dict(entries[-1]) if entries else {"name": name, **PRESETS.get(name, {})}
    out = {k: spec[k] for k in ("name", "batching", "padding", "readout") if k in spec}
    if spec.get("framework", "torch") != "torch":  # a Keras strategy: its batches, and who trained them
        out.update(framework=spec["framework"], backend=spec.get("backend", ""))
    for key, default in OPTION_DEFAULTS.items():
        value = list(spec[key]) if isinstance(spec.get(key), (list, tuple)) else spec.get(key, default)
        if value not in (default, []):
            out[key] = value
    return out


READOUT_LINES = {"mask": ("output, _ = lstm(embed(batch.inputs))", "use last_step(output, batch.lengths)"),
                 "pack": ("output, (h_n, c_n) = lstm(batch.packed(embed(batch.inputs)))",
                          "use batch.packed(x); h_n[-1] is each sequence's last step"),
                 "last": ("output, _ = lstm(embed(batch.inputs))",
                          "the output at the last (padded) step, output[:, -1]")}


def python_snippet(rec: Recommendation) -> str:
    """A short runnable snippet of the public batching API (lstmbench.batching) set up as the winner; for an
    undecided section, a comment saying why. `dataset`, `epochs`, `embed` and `lstm` are the user's.

    Every text from the rows (names, the why) goes into a comment made safe by `_comment` (one line, printable)
    or into a literal made by `_literal`: a name in a shared results folder can never become a statement."""
    where = f"suite {rec.suite!r} ({rec.device})"
    if rec.winner is None:
        return _comment(f"lstmbench cannot recommend a strategy for {where}: {rec.undecided or ''}") + "\n"
    spec = rec.strategy or {"name": rec.winner}
    readout = spec.get("readout", "mask")
    code_line, comment = READOUT_LINES.get("pack" if readout == "pack_sorted" else readout, READOUT_LINES["mask"])
    imports = "batch_sampler, collate" + (", last_step" if readout == "mask" else "")
    if readout == "mask" and rec.bidirectional:  # exact in both directions, on the fused kernel
        code_line, comment = ("output, last = bidirectional_lstm(lstm, embed(batch.inputs), batch.lengths)",
                              "last: each sequence's final state, both directions")
        imports = "batch_sampler, bidirectional_lstm, collate"
    options = {k: v for k, v in spec.items() if k not in ("name", "batching", "padding", "readout", "framework",
                                                          "backend")}
    shown = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "max_len=128"
    preset = (f'or the preset name "{rec.winner}"' if rec.winner in PRESETS else 'or a preset name like "bucket"')
    body = ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in spec.items())
    collate_args = "strategy, max_length=max(lengths)" if spec.get("padding") == "global" else "strategy"
    batch_size = rec.batch_size if isinstance(rec.batch_size, int) and rec.batch_size > 0 else 32
    lines = [
        _comment(f"lstmbench recommends {rec.winner} for {where}: {rec.why}"),
        *([_comment(f"{rec.winner} was trained by Keras on {spec.get('backend')} (Embedding(mask_zero=True), "
                    "layers.LSTM): these are its batches, for a PyTorch loop as below, or as Keras's input")]
          if spec.get("framework") == "keras" else []),
        "# dataset (your (sequence, label) pairs), epochs, embed and lstm (an nn.LSTM(batch_first=True)) are yours",
        "from torch.utils.data import DataLoader",
        f"from lstmbench.batching import {imports}",
        "",
        f"strategy = {{{body}}}  " + _comment(f"{preset}, with options as keyword arguments ({shown})"),
        "lengths = [len(seq) for seq, label in dataset]  # your Dataset of (sequence, label) pairs",
        f"sampler = batch_sampler(lengths, strategy, batch_size={batch_size}, seed=0)",
    ]
    if rec.distributed:
        lines.append("# under DDP, batch_size is per rank: batch_sampler(..., num_replicas=world_size, rank=rank)")
    lines += [
        f"loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate({collate_args}))",
        "for epoch in range(epochs):",
        "    sampler.set_epoch(epoch)",
        "    for batch in loader:  # batch.inputs [B, T] padded, batch.lengths (CPU int64), batch.labels",
        f"        {code_line}  " + _comment(f"readout {readout}: {comment}"),
        "        ...",
    ]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> str:
    """`text` as one Python comment: every character that is not printable (a newline, a carriage return, a
    form feed, U+2028) becomes a space, so nothing after it can start a line of code."""
    return "# " + " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())


def _literal(value: Any) -> str:
    """`value` as a Python literal: strings through JSON (double quotes, every control character escaped),
    numbers and booleans through repr, lists and objects item by item; anything else as its text, quoted."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f'float("{value}")'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))
