"""The tuner's cost model: a training step's time and peak memory as functions of its batch's shape, fitted by
least squares to steps timed on this machine (`tune.probe`); which batch shapes to time for it; and a candidate
strategy's epoch predicted from its real plan, the candidates ranked and one proposed. Nothing here runs torch.

An LSTM loops over time, and each of its steps costs about a fixed part plus a part per row, so a padded batch
of B rows and T steps (the readouts mask and last, one fused kernel call) costs

    seconds = a + T x (b + c x B)        (a: the embedding, head, loss and optimizer step; b: per time step)

and a packed batch (pack, pack_sorted), whose time steps shrink as its sequences end, costs

    seconds = a + b x T + c x real tokens + d x T x real tokens

where d is what the generic per-step loop (a CPU's packed path) adds: its cost per step grows with the tokens the
packed batch holds (measured on a 2-core CPU: 32 rows of ~400 steps took 4x 32 rows of ~200, not 2x). A packed
batch whose sequences all have one length runs the fused kernel, as a padded one (Prediction uses the padded fit).

Peak memory is fitted the same way: base + per_cell x B x T (+ per_real x real tokens for packed batches).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from scipy.optimize import nnls

from ..data import Dataset
from ..errors import LstmbenchError
from ..strategies import Strategy, plan_ranks
from ..suite import StrategySpec

PADDED = "padded"  # readouts mask and last: the padded batch through the fused kernel (oneDNN, cuDNN)
PACKED = "packed"  # readouts pack and pack_sorted: a PackedSequence (PyTorch's generic per-step loop on a CPU)
KINDS = (PADDED, PACKED)
READOUT_OF = {PADDED: "mask", PACKED: "pack"}  # the readout a kind is probed with
MARGIN = 0.05  # a searched candidate replaces the best preset only if predicted 5% faster: repeated probes of a
# shape agree within about that once averaged, and a smaller gain would as likely be a loss when measured


class TuneError(LstmbenchError):
    """The tuner cannot do what was asked (a bad option, a cap nothing fits under, too few probes)."""


def kind_of(readout: str) -> str:
    return PACKED if readout in ("pack", "pack_sorted") else PADDED


class BatchShape(NamedTuple):
    """What a batch's step costs depend on."""
    rows: int  # B
    width: int  # T: the padded length (pad_multiple included)
    real_tokens: int
    longest: int  # the longest sequence: the steps a packed batch runs, whatever the padding
    uniform: bool  # every sequence of one length: a packed batch then runs the fused kernel, as a padded one


@dataclass(frozen=True)
class Probe:
    """One probed batch shape: its median step time (batch preparation included) and, where measured, the
    peak memory of one step."""
    kind: str
    rows: int  # B
    width: int  # T, the padded length
    real_tokens: int
    seconds: float
    memory_bytes: int | None = None
    mix: str = "near"  # the batch's other sequences: the longest below its length (near) or drawn below it (random)


def features(kind: str, rows: int, width: int, real_tokens: int) -> list[float]:
    """The regressors of a step's time: [1, T, B x T] padded, [1, T, real tokens, T x real tokens] packed."""
    if kind == PADDED:
        return [1.0, float(width), float(rows * width)]
    return [1.0, float(width), float(real_tokens), float(width) * real_tokens]


@dataclass(frozen=True)
class StepCost:
    """seconds = a + b x T + c x (B x T, or real tokens when packed) [+ d x T x real tokens when packed], with its
    error on the probes it came from."""
    kind: str
    a: float
    b: float
    c: float
    d: float = 0.0  # packed only
    probes: int = 0
    mean_rel_error: float = 0.0  # mean |predicted - probed| / probed, on the fitted probes (in sample)
    max_rel_error: float = 0.0

    def seconds(self, rows: int, width: int, real_tokens: int) -> float:
        x = features(self.kind, rows, width, real_tokens)
        return float(np.dot([self.a, self.b, self.c, self.d][:len(x)], x))

    def formula(self) -> str:
        if self.kind == PADDED:
            return f"{self.a * 1e3:.3g} ms + T x ({self.b * 1e6:.3g} us + B x {self.c * 1e6:.3g} us)"
        return (f"{self.a * 1e3:.3g} ms + T x {self.b * 1e6:.3g} us + real tokens x ({self.c * 1e6:.3g} us + T x "
                f"{self.d * 1e9:.3g} ns)")


@dataclass(frozen=True)
class MemoryCost:
    """Peak bytes of one step = base + per_cell x B x T + per_real x real tokens (per_real: packed only)."""
    kind: str
    base: float
    per_cell: float
    per_real: float = 0.0
    probes: int = 0
    mean_rel_error: float = 0.0

    def bytes(self, rows: int, width: int, real_tokens: int) -> float:
        return self.base + self.per_cell * rows * width + self.per_real * real_tokens


@dataclass(frozen=True)
class CostModel:
    """A StepCost for each kind of readout probed, and a MemoryCost where memory was measured."""
    steps: dict[str, StepCost]
    memory: dict[str, MemoryCost]
    memory_measure: str = ""  # how the memory probes were measured, for the output

    def seconds(self, readout: str, shape: BatchShape) -> float:
        """A step's predicted time: a packed batch runs its longest sequence's steps (padding, pad_multiple's
        included, is never run), and runs them fused when its sequences have one length."""
        kind = kind_of(readout)
        if kind == PADDED:
            return self.steps[PADDED].seconds(shape.rows, shape.width, shape.real_tokens)
        fused = shape.uniform and PADDED in self.steps
        return self.steps[PADDED if fused else PACKED].seconds(shape.rows, shape.longest, shape.real_tokens)

    def peak_bytes(self, readout: str, shape: BatchShape) -> float | None:
        fit = self.memory.get(kind_of(readout))
        return fit.bytes(shape.rows, shape.width, shape.real_tokens) if fit else None


def _relative_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative residuals (each probe weighs the same whatever its size, and no
    coefficient goes negative to chase noise). Exact data is recovered exactly where x has full rank."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls((x / scale) / y[:, None], np.ones(len(y)))
    return coef / scale


def fit_steps(probes: Sequence[Probe], kind: str) -> StepCost:
    """The StepCost of one kind from its probes (at least one per coefficient, of at least 2 lengths)."""
    mine = [p for p in probes if p.kind == kind]
    need = len(features(kind, 1, 1, 1))
    if len(mine) < need or len({p.width for p in mine}) < 2:
        raise TuneError(f"{len(mine)} {kind} probe(s) of {len({p.width for p in mine})} length(s) cannot fit a "
                        f"step-time model (it needs {need} probes of 2 lengths); give --budget-s more seconds")
    x = np.array([features(kind, p.rows, p.width, p.real_tokens) for p in mine])
    y = np.array([p.seconds for p in mine])
    coef = _relative_nnls(x, y)
    errors = np.abs(x @ coef - y) / y
    return StepCost(kind, *map(float, coef), probes=len(mine), mean_rel_error=float(errors.mean()),
                    max_rel_error=float(errors.max()))


def fit_memory(probes: Sequence[Probe], kind: str) -> MemoryCost | None:
    """The MemoryCost of one kind from its probes with a memory figure (None with fewer than 2 sizes)."""
    mine = [p for p in probes if p.kind == kind and p.memory_bytes]
    if len({p.rows * p.width for p in mine}) < 2:
        return None
    columns = [[1.0, p.rows * p.width] + ([p.real_tokens] if kind == PACKED else []) for p in mine]
    x, y = np.array(columns, dtype=float), np.array([p.memory_bytes for p in mine], dtype=float)
    coef = _relative_nnls(x, y)
    error = float((np.abs(x @ coef - y) / y).mean())
    return MemoryCost(kind, float(coef[0]), float(coef[1]), float(coef[2]) if kind == PACKED else 0.0, len(mine),
                      error)


def fit_model(probes: Sequence[Probe], memory_measure: str = "") -> CostModel:
    kinds = [k for k in KINDS if any(p.kind == k for p in probes)]
    memory = {k: m for k in kinds if (m := fit_memory(probes, k))}
    return CostModel({k: fit_steps(probes, k) for k in kinds}, memory, memory_measure)


def probe_grid(shapes: dict[str, list[tuple[int, int]]], lengths: np.ndarray,
               first: int = 5) -> list[tuple[str, int, int, str]]:
    """(kind, rows, length, mix) to probe, in the order to probe them: per kind, a grid of rows x lengths (lengths
    that occur in the data) nearest the shapes the candidates make, the most frequent first, then each next the
    farthest from those before (log scale), so that the first few already span the range; the `first` few of a
    kind among its cheaper half (cells at most the median), so that a short budget still gets a fit; kinds
    alternate.
    `mix`: the batch's other sequences are the longest below its length ("near", a bucket's) or drawn at random
    below it ("random"): packed steps cost with their real tokens."""
    present = np.unique(lengths)
    orders = []
    for kind in KINDS:
        s = np.array(shapes.get(kind, []), dtype=float)
        if not len(s):
            continue
        # rows: from the 2nd to the 98th percentile of the batches weighted by cells (where the time goes; a
        # boundaries range's last one-row batch is not), widths: percentiles of the batches' padded lengths
        by_rows = s[np.argsort(s[:, 0], kind="stable")]
        share = np.cumsum(by_rows[:, 0] * by_rows[:, 1]) / (by_rows[:, 0] * by_rows[:, 1]).sum()
        low, high = (by_rows[min(np.searchsorted(share, q), len(s) - 1), 0] for q in (0.02, 0.98))
        rows = np.unique(np.geomspace(low, high, 6).round().astype(int))
        widths = np.unique([present[max(0, np.searchsorted(present, w, "right") - 1)]
                            for w in np.percentile(s[:, 1], [0, 10, 30, 50, 70, 90, 97, 100])])
        def near(axis: int, values: np.ndarray, s: np.ndarray = s) -> np.ndarray:
            return np.abs(np.log(s[:, axis:axis + 1]) - np.log(values)[None, :]).argmin(1)
        cells, counts = np.unique(np.stack([near(0, rows), near(1, widths)], 1), axis=0, return_counts=True)
        points = np.log(np.stack([rows[cells[:, 0]], widths[cells[:, 1]]], 1).astype(float))
        size = points.sum(1)  # log(rows x length)
        cheap = size <= np.median(size)
        order = [int(counts.argmax())]
        while len(order) < len(cells):
            dist = np.min([np.abs(points - points[i]).sum(1) for i in order], axis=0)
            dist[order] = -1
            if len(order) < first and (dist[cheap] >= 0).any():
                dist[~cheap] = -1
            order.append(int(dist.argmax()))
        orders.append([(kind, int(rows[cells[i, 0]]), int(widths[cells[i, 1]]), ("near", "random")[k % 2])
                       for k, i in enumerate(order)])
    return [item for group in zip(*[o + [None] * (max(map(len, orders)) - len(o)) for o in orders])
            for item in group if item]


def examples(lengths: np.ndarray, rows: int, width: int, mix: str, rng: np.random.Generator,
             distinct: bool = False) -> np.ndarray:
    """`rows` real examples, the longest of them `width` long (repeated where the data has too few). `distinct`:
    not all of one length where the data allows (a packed batch of equal lengths runs the fused kernel)."""
    below = np.flatnonzero(lengths <= width)
    below = below[np.argsort(-lengths[below], kind="stable")]
    if mix == "near":
        others = below[1:rows] if len(below) >= rows else rng.choice(below, rows - 1)
    else:
        others = rng.choice(below, rows - 1, replace=len(below) < rows)
    idx = np.concatenate([below[:1], others]).astype(np.int64)
    shorter = below[lengths[below] < lengths[idx[0]]]
    if distinct and rows > 1 and np.all(lengths[idx] == lengths[idx[0]]) and len(shorter):
        idx[-1] = shorter[0]
    return idx


# ----------------------------------------------------------------------------- a candidate's epoch, predicted
@dataclass(frozen=True)
class Candidate:
    spec: StrategySpec
    batch_size: int
    origin: str  # "search" (generated here), "suite" (one of the suite's strategies) or "preset"


@dataclass(frozen=True)
class Prediction:
    candidate: Candidate
    steps: int
    sequences: int
    real_tokens: int
    padded_tokens: int
    seconds: float  # predicted training time of one epoch (the sum of its predicted steps; DDP: slowest rank)
    peak_bytes: float | None  # predicted peak of its largest batch's step (None: memory not modelled)
    largest: tuple[int, int]  # (rows, length) of its batch with the most padded cells

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds

    @property
    def mean_rows(self) -> float:
        return self.sequences / self.steps


Shapes = list[list[BatchShape]]  # per step, one per rank


def epoch_shapes(candidate: Candidate, data: Dataset, seed: int, world: int = 1) -> Shapes:
    """One epoch of the candidate's plan over `data`, as the harness would make it (ranks.plan_ranks)."""
    strategy = Strategy(candidate.spec)
    steps = plan_ranks(strategy, data, candidate.batch_size, 1, seed, world)

    def shape(idx: np.ndarray) -> BatchShape:
        kept = strategy.kept_lengths(data.lengths[idx])
        return BatchShape(*strategy.shape(data, idx), strategy.real_tokens(data, idx), int(kept.max()),
                          bool(kept.min() == kept.max()))

    return [[shape(idx) for idx in step] for step in steps]


def predict(candidate: Candidate, shapes: Shapes, model: CostModel) -> Prediction:
    """The candidate's epoch under the cost model: each step's time (DDP: its slowest rank's), summed."""
    readout = candidate.spec.readout
    flat = [s for step in shapes for s in step]
    seconds = sum(max(model.seconds(readout, s) for s in step) for step in shapes)
    largest = max(flat, key=lambda s: (s.rows * s.width, s.real_tokens))
    peaks = [model.peak_bytes(readout, s) for s in (largest, max(flat, key=lambda s: s.real_tokens))]
    return Prediction(candidate, len(shapes), sum(s.rows for s in flat), sum(s.real_tokens for s in flat),
                      sum(s.rows * s.width for s in flat), seconds, None if peaks[0] is None else max(peaks),
                      (largest.rows, largest.width))


def search(cands: list[Candidate], data: Dataset, model: CostModel, seed: int, world: int = 1,
           memory_cap: float | None = None, batch_size: int | None = None
           ) -> tuple[list[Prediction], list[Prediction]]:
    """(the candidates under the memory cap, fastest first; those over it). token_budget candidates (but the suite's
    own) whose mean rows a step leave [batch_size / 2, 2 x batch_size] are left out: they train too differently."""
    kept, over = [], []
    for c in cands:
        p = predict(c, epoch_shapes(c, data, seed, world), model)
        token_budget = c.origin != "suite" and c.spec.batching == "token_budget"
        if token_budget and batch_size and not batch_size / 2 <= p.mean_rows / world <= 2 * batch_size:
            continue
        (over if memory_cap and p.peak_bytes and p.peak_bytes > memory_cap else kept).append(p)
    return sorted(kept, key=lambda p: -p.tokens_per_s), over


def propose(ranked: list[Prediction], over: list[Prediction], memory_cap: float | None,
            suite_batch_size: int) -> Proposal:
    """The fastest candidate, unless it is not MARGIN faster than the best of the suite's strategies and the
    presets: then that one. TuneError if the cap leaves nothing."""
    if not ranked:
        smallest = min(over, key=lambda p: p.peak_bytes or 0)
        raise TuneError(f"no exact candidate fits under --memory-cap {memory_cap / 2**20:,.4g} MiB: the smallest "
                        f"predicted peak is {(smallest.peak_bytes or 0) / 2**20:,.1f} MiB "
                        f"({smallest.candidate.spec.name})")
    baselines = [p for p in ranked if p.candidate.origin != "search"]
    if not baselines:
        raise TuneError("no exact strategy of the suite or preset fits under the memory cap to compare with")
    best, preset = ranked[0], baselines[0]
    if best.tokens_per_s < (1 + MARGIN) * preset.tokens_per_s:  # a gain within the predictions' noise: keep it
        best = preset
    return Proposal(best, preset, suite_batch_size)


@dataclass(frozen=True)
class Proposal:
    best: Prediction
    preset: Prediction  # the best of the suite's own exact strategies and the exact presets
    suite_batch_size: int

    @property
    def entry(self) -> dict:
        """The strategy entry to paste into a suite: `tuned`, and the options it sets (not the defaults)."""
        spec, default = self.best.candidate.spec, StrategySpec(name="tuned")
        out = {"name": "tuned", "batching": spec.batching, "padding": spec.padding, "readout": spec.readout}
        for f in dataclasses.fields(StrategySpec):
            value = getattr(spec, f.name)
            if f.name not in out and value != getattr(default, f.name):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def yaml(self) -> str:
        """One flow-style YAML line: `- {name: tuned, batching: bucket, ...}`."""
        return "- {" + ", ".join(f"{k}: {json.dumps(v) if isinstance(v, list) else v}"
                                 for k, v in self.entry.items()) + "}"

    @property
    def batch_size(self) -> int | None:
        """train.batch_size to set with it, if it differs from the suite's."""
        size = self.best.candidate.batch_size
        return size if size != self.suite_batch_size else None
