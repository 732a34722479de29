"""Stage 5b, evaluation on the held-out set: accuracy and loss through a strategy's own inference path, by
length bin, and the time to a target accuracy read from a run's curve (MLPerf's score)."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..strategies import Strategy
from .model import Precision, correct_of, hits_of, loss_of


@torch.inference_mode()  # no autograd bookkeeping at all (no_grad still tracks versions)
def evaluate(model: torch.nn.Module, strategy: Strategy, data: Dataset, batch_size: int, device: torch.device,
             precision: Precision | None = None, per_example: bool = False) -> Any:
    """(accuracy, mean cross-entropy) over `data` through `strategy`'s padding and readout, in the
    precision it trained with (what deploying it gives). `per_example`: also each sequence's hits (correct,
    or its correct steps for the tag task), in the data's order."""
    was_training = model.training
    model.eval()
    correct, loss_sum, hits = 0, 0.0, []
    # each batch's rows in their collated order (packing sorts within a batch): per-example hits land on theirs
    order = strategy.eval_order(data)
    order = np.concatenate([strategy.row_order(data, order[i:i + batch_size])
                            for i in range(0, len(order), batch_size)]) if len(order) else order
    for batch in strategy.eval_batches(data, batch_size):
        batch = batch.to(device)
        with precision.autocast() if precision else contextlib.nullcontext():
            logits = model(batch.tokens, batch.lengths, strategy.readout, batch.lengths_on_device).float()
        loss_sum += loss_of(logits, batch.labels, reduction="sum").item()
        correct += correct_of(logits, batch.labels)
        if per_example:
            hits.append(hits_of(logits, batch.labels).cpu().numpy())
    model.train(was_training)
    scored = int(data.lengths.sum()) if data.tagged else len(data)  # tag: every real step, truncated or not
    if not per_example:
        return correct / scored, loss_sum / scored
    in_order = np.empty(len(data), dtype=np.int64)
    in_order[order] = np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)
    return correct / scored, loss_sum / scored, in_order


def time_to_target(curve: list[list[float]], target: float) -> float | None:
    """Training seconds at the first evaluation that reached `target` (MLPerf's score); None if none did."""
    if not target:
        return None
    return next((t for t, _, accuracy in curve if accuracy >= target), None)


def robust_time_to_target(curve: list[list[float]], target: float, step_tokens: list[int],
                          windows: list[float]) -> tuple[int | None, float | None]:
    """(real tokens trained until the first evaluation that reached `target`, those tokens over the median of
    the run's window throughputs). The tokens are the same for every run of a seed on a CPU (the curve is
    deterministic); the median window resists a burst of load that slowed a few windows, where the measured
    time to target keeps every second of it. (None, None) if the target was not reached."""
    n = next((int(steps) for _, steps, accuracy in curve if accuracy >= target), None) if target else None
    if n is None:
        return None, None
    tokens = int(sum(step_tokens[:n]))
    rate = float(np.median(windows)) if windows else 0.0
    return tokens, (tokens / rate if rate > 0 else None)


def resolution(curve: list[list[float]], target: float) -> float | None:
    """How finely the time to target is read: the training seconds between the evaluation that first reached
    the target and the one before it (the run's start for the first). None if the target was not reached."""
    k = next((k for k, (_, _, accuracy) in enumerate(curve) if accuracy >= target), None) if target else None
    return None if k is None else curve[k][0] - (curve[k - 1][0] if k else 0.0)


def accuracy_by_length(data: Dataset, hits: np.ndarray) -> list[list[float]]:
    """`[low, high, count, accuracy]` per length bin of the held-out set: deciles of its lengths (fewer bins
    for fewer than 100 sequences, about 10 a bin; equal lengths never split). `hits` is per sequence: correct
    (classify) or correct steps (tag), in the data's order. Each sequence falls in exactly one bin."""
    lengths = data.lengths
    bins = max(1, min(10, len(lengths) // 10))
    # each bin's upper edge is a quantile that is itself a length: no bin is empty, equal lengths share one
    uppers = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1)[1:], method="nearest"))
    which = np.searchsorted(uppers, lengths, side="left")  # bin j: lengths in (uppers[j-1], uppers[j]]
    out = []
    for j in range(len(uppers)):
        members = which == j
        scored = lengths[members].sum() if data.tagged else members.sum()
        out.append([int(lengths[members].min()), int(lengths[members].max()), int(members.sum()),
                    float(hits[members].sum() / scored)])
    return out
