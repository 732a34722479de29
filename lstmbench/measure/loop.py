"""The training loop's parts: the one optimizer step, the untimed warm-up, the timed steps between
evaluations, and what ends a run early (out of memory, a loss that is not finite). `SEAMS` names what a test
may put in place of the real thing: the step, the evaluation, the loss."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import RunFailed
from ..strategies import Batch
from .evaluation import evaluate
from .model import Precision, loss_of
from .probes import out_of_memory

Progress = Callable[[int, int], None]  # (steps done, steps in all)


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, readout: str,
               precision: Precision, scale: float | None = None) -> torch.Tensor:
    """One optimizer step: the only place the model is trained (warm-up and timed loop alike). With `scale`
    (a DDP rank), the loss is the batch's summed loss times `scale`."""
    with precision.autocast():
        logits = net(batch.tokens, batch.lengths, readout, batch.lengths_on_device)
        loss = SEAMS.loss(logits, batch.labels) if scale is None else \
            SEAMS.loss(logits, batch.labels, "sum") * scale
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss


@dataclass
class Seams:
    """What a test may replace, named in one place instead of patched by attribute in the loop's module:
    `monkeypatch.setattr(SEAMS, "step", fails)`."""
    step: Callable[..., torch.Tensor] = train_step  # one optimizer step (warm-up, timed loop)
    evaluate: Callable[..., Any] = evaluate  # a held-out evaluation (periodic and final)
    loss: Callable[..., torch.Tensor] = loss_of  # the training loss of a batch


SEAMS = Seams()


@contextlib.contextmanager
def out_of_memory_as_row(step: int, shape: tuple[int, int]) -> Iterator[None]:
    """An out-of-memory error (on a GPU, or torch's CPU allocator) becomes an `oom` row naming the batch shape
    that did not fit."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only allocation failures are translated; the rest go up unchanged
        if not out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else "out of memory"
        raise RunFailed("oom", f"out of memory at step {step} on a batch of shape {shape}: {first}") from None


def check_finite(losses: list[torch.Tensor], first: int, rank: int | None) -> None:
    """A training loss that is NaN or infinite ends the run as `diverged`, naming the step."""
    for k, value in enumerate(torch.stack(losses).float().tolist()):
        if not math.isfinite(value):
            raise RunFailed("diverged", f"training loss became {value} at step {first + k}" +
                            (f" on rank {rank}" if rank is not None else ""))


WINDOWS = 8  # a run's timed steps cut into 8 consecutive windows, each a throughput measurement of its own:
# enough to see a transient disturbance or a drift within the run (pyperf takes 3 values a process), few
# enough that each window still spans many steps (24 of the default suite's 192)


def window_rates(tokens: list[int], times: list[float], windows: int = WINDOWS) -> list[float]:
    """Real tokens per second of each of `windows` consecutive slices of the steps (as many as there are
    steps, if fewer)."""
    k = min(windows, len(times))
    edges = np.linspace(0, len(times), k + 1).round().astype(int)
    return [float(sum(tokens[a:b]) / sum(times[a:b])) for a, b in zip(edges[:-1], edges[1:])]


def compile_counts() -> dict[str, int]:
    """What torch.compile made of the run (its cost is in warmup_time_s and shape_warmup_s): the graphs it
    compiled (one more per recompilation for a new shape) and its graph breaks (Dynamo does not trace an LSTM:
    it breaks there and runs the module eagerly)."""
    from torch._dynamo.utils import counters

    return {"compile_graphs": int(counters["stats"]["unique_graphs"]),
            "compile_graph_breaks": int(sum(counters["graph_break"].values()))}
