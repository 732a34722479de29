"""The length planner: what each strategy would do to a suite's data, without training anything."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data import make_data
from ..suite import IDEAL, PRESETS, Suite, apply_override, suite_from_dict
from .ranks import plan_ranks, planned_wait_fraction
from .strategy import Strategy, note_for

DATA_SUFFIXES = (".csv", ".tsv", ".jsonl")
# Why 8: fp16/bf16 tensor cores on NVIDIA GPUs want dimensions that are multiples of 8.
PAD_MULTIPLE = 8


@dataclass(frozen=True)
class LengthStats:
    n: int
    min: int
    median: float
    p90: float
    p99: float
    max: int
    mean: float


@dataclass(frozen=True)
class StrategyPadding:
    strategy: str
    batches: int
    real_tokens: int
    padded_tokens: int
    largest_shape: tuple[int, int]  # (batch, time) of the batch with the most padded positions
    # distinct (batch, time) shapes of the epoch: each costs a backend a one-off set-up the first time it is seen
    # (cuDNN autotuning, oneDNN primitive creation, torch.compile recompilation)
    distinct_shapes: int
    shapes_at_multiple: int | None  # the same with pad_multiple PAD_MULTIPLE; None where it does not apply (reshape)
    note: str
    planned_wait: float | None = None  # DDP (launch.nproc > 1): rank time waiting for the slowest, from padded cells

    @property
    def pad_fraction(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens


@dataclass(frozen=True)
class PaddingTable:
    suite: str
    seed: int
    lengths: np.ndarray
    stats: LengthStats
    strategies: list[StrategyPadding]

    def table(self) -> list[dict[str, str | int | None]]:
        """One row a strategy, as `lstmbench lengths` shows it (planned wait % for a DDP plan; None, shown as -,
        where pad_multiple does not apply)."""
        rows: list[dict[str, str | int | None]] = []
        for p in self.strategies:
            rows.append({"strategy": p.strategy, "computes": p.note, "batches": p.batches,
                         "pad %": f"{100 * p.pad_fraction:.1f}", "real tokens": f"{p.real_tokens:,}",
                         "padded tokens": f"{p.padded_tokens:,}",
                         "largest batch": f"{p.largest_shape[0]} x {p.largest_shape[1]}",
                         "shapes": p.distinct_shapes,
                         f"shapes with pad_multiple {PAD_MULTIPLE}": p.shapes_at_multiple})
            if p.planned_wait is not None:
                rows[-1]["planned wait %"] = f"{100 * p.planned_wait:.1f}"
        return rows


def padding_table(suite: Suite, seed: int | None = None) -> PaddingTable:
    """One epoch of every strategy (and the ideal) over the seed's training split; with launch.nproc > 1,
    of its distributed form (`batches` then counts every rank's)."""
    seed = suite.seeds[0] if seed is None else seed
    data = make_data(suite.data, seed, suite.origin).train
    lengths = data.lengths
    world = suite.launch.nproc
    plans = []
    for spec in ([IDEAL] if suite.ideal else []) + list(suite.strategies):
        strategy = Strategy(spec)
        steps = plan_ranks(strategy, data, suite.train.batch_size, 1, seed, world)
        batches = [idx for step in steps for idx in step]
        shapes = [strategy.shape(data, idx) for idx in batches]
        real = sum(strategy.real_tokens(data, idx) for idx in batches)
        padded = sum(b * t for b, t in shapes)
        wait = planned_wait_fraction(strategy, data, steps) if world > 1 else None
        # pad_multiple rounds the time axis of padding global/batch/truncate; the ideal's reshape has none to round.
        # A strategy that sets its own pad_multiple still gets the count at PAD_MULTIPLE, as the header says.
        aligned = None
        if not spec.is_reference:
            at_multiple = Strategy(replace(spec, pad_multiple=PAD_MULTIPLE))
            aligned = len({at_multiple.shape(data, idx) for idx in batches})
        plans.append(StrategyPadding(spec.name, len(batches), real, padded, max(shapes, key=lambda s: s[0] * s[1]),
                                  len(set(shapes)), aligned, note_for(spec, suite) or "exact", wait))
    return PaddingTable(suite.name, seed, lengths, length_stats(lengths), plans)


def length_stats(lengths: np.ndarray) -> LengthStats:
    q50, q90, q99 = np.percentile(lengths, [50, 90, 99])
    return LengthStats(len(lengths), int(lengths.min()), float(q50), float(q90), float(q99), int(lengths.max()),
                       float(lengths.mean()))


def histogram(lengths: np.ndarray, bins: int = 12, width: int = 40) -> list[str]:
    """Text bars over log-spaced bins (long tails stay readable): `  12-  17 | ######## 312`."""
    low, high = int(lengths.min()), int(lengths.max())
    if low == high:
        return [f"{low:>6} | {'#' * width} {len(lengths)}"]
    edges = np.unique(np.geomspace(low, high + 1, bins + 1).astype(int))
    counts, _ = np.histogram(lengths, bins=edges)
    top = counts.max()
    return [f"{a:>6}-{b - 1:<6}| {'#' * max(int(round(width * c / top)), 1 if c else 0):<{width}} {c}"
            for a, b, c in zip(edges[:-1], edges[1:], counts)]


def data_suite(path: str, overrides: tuple[str, ...] | list[str] = ()) -> Suite:
    """A suite over a data file alone: all of it, every preset, character tokens (override with --set)."""
    raw = {"name": "data", "strategies": list(PRESETS),
           "data": {"source": "text", "path": str(Path(path).resolve()), "train_size": 0, "eval_size": 0}}
    for item in overrides:
        apply_override(raw, item, path)
    return suite_from_dict(raw, path)
