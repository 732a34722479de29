"""The unpadded reference of a run: its own first epoch of batches, each cut into equal rows of its real
tokens (`Strategy.unpadded`), trained from the same seeded weights and timed as the run was, in the run's
process right after its training. A run's `efficiency` is its tokens/s over the reference's."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..strategies import Batch, Strategy, batches
from ..suite import TrainConfig
from .loop import SEAMS, window_rates
from .model import Precision
from .timing import StepTimer


@dataclass(frozen=True)
class Reference:
    """What the reference measured: its tokens/s, per window, and the steps it timed."""
    tokens_per_s: float
    windows: list[float]
    steps: int

    def fields(self, tokens_per_s: float) -> dict[str, Any]:
        return {"reference_tokens_per_s": self.tokens_per_s, "reference_window_tokens_per_s": self.windows,
                "reference_steps": self.steps, "efficiency": tokens_per_s / self.tokens_per_s}


REFERENCE_SHARE = 0.125  # the unpadded reference times at most 1/8 as many steps as the run did (and warms up
# on at most as many again), so it adds at most ~1/4 of the run's step count, at the cheaper unpadded cost
REFERENCE_MIN_STEPS = 16  # but at least this many (or the whole first epoch): fewer would make a noisy figure


def reference_sample(plan: list[np.ndarray], per_epoch: int) -> list[np.ndarray]:
    """The batches the reference times: spread evenly over the run's first epoch, so that their mix of
    lengths is the epoch's."""
    epoch = plan[:per_epoch]
    k = min(len(epoch), max(REFERENCE_MIN_STEPS, math.ceil(REFERENCE_SHARE * len(plan))))
    return [epoch[i] for i in np.linspace(0, len(epoch) - 1, k).round().astype(int)] if k < len(epoch) else epoch


def measure_reference(model: torch.nn.Module, initial: dict[str, torch.Tensor], strategy: Strategy,
                      data: Dataset, plan: list[np.ndarray], device: torch.device, precision: Precision,
                      train: TrainConfig) -> Reference:
    """What the same batches cost with no padding at all, measured in the run's own process right after its
    training (so the machine's state is the run's): one untimed step of every new shape, then every batch of
    `plan` (reference_sample's) timed as the run's steps are: the same StepTimer (CUDA events, synchronised
    only at the ends), the same input path (the suite's loader: in-process, or workers with pinned memory).
    Its loader starts off the clock (its first batch is fetched before), since the run starts its own once.
    A copy of the model, put back to the seeded weights: the run's trained model is untouched. `train`: the
    suite's (its learning rate and loader)."""
    net = copy_model(model)
    precision = Precision(device.type, precision.amp, precision.lstm_dtype)  # a fresh loss scaler
    unpadded = Unpadded(strategy)
    seen: set[tuple[int, ...]] = set()
    optimizer = torch.optim.Adam(net.parameters(), lr=train.lr)
    for idx in plan:  # warm-up: every shape once
        batch = unpadded.collate(data, idx)
        if tuple(batch.tokens.shape) not in seen:
            seen.add(tuple(batch.tokens.shape))
            SEAMS.step(net, optimizer, batch.to(device), "last", precision)
    net.load_state_dict(initial)
    optimizer = torch.optim.Adam(net.parameters(), lr=train.lr)
    timer, tokens = StepTimer(device), []
    feed = batches(unpadded, data, plan, device, train.loader)
    first = next(feed, None)  # starts the loader's workers, off the clock
    with timer.segment():
        for step in range(len(plan)):
            t0 = timer.mark()
            batch, _ = first if step == 0 else next(feed)
            SEAMS.step(net, optimizer, batch, "last", precision)
            timer.step(t0, timer.mark())
            tokens.append(batch.real_tokens)
    feed.close()
    wall = sum(t for _, t in timer.segment_times())  # CUDA: the segment's wall time, as the run's train_time
    return Reference(sum(tokens) / wall, window_rates(tokens, timer.step_times()), len(plan))


@dataclass(frozen=True)
class Unpadded:
    """A strategy's batches without padding (Strategy.unpadded) as a collate the loader can run, in workers
    too: the reference's input path is the run's."""

    strategy: Strategy

    readout = "last"

    def collate(self, data: Dataset, idx: np.ndarray) -> Batch:
        return self.strategy.unpadded(data, idx)


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy whose LSTMs have their weights in one flat buffer again: a deep copy of a CUDA model loses
    cuDNN's, and every call of the copy would then re-compact them (and warn)."""
    net = copy.deepcopy(model)
    for module in net.modules():
        if isinstance(module, torch.nn.RNNBase):
            module.flatten_parameters()
    return net
