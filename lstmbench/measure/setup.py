"""A run's set-up, before anything is timed: the seed's data, the seeded model and its checksum, every rank's
plan of batches, the kernel and dtype the costliest batch runs, and the equivalence check on that path."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import Splits, make_data
from ..errors import SuiteError
from ..strategies import Strategy, note_for, plan_ranks
from ..suite import StrategySpec, Suite
from .ddp import Group, rank_device, wrap
from .model import LSTMClassifier, Precision, model_for, weights_checksum
from .probes import KernelProbe, reset_peak_memory, rss_bytes
from .user_model import one_line
from .verify import RunCheck, check_run


@dataclass(frozen=True)
class Run:
    """What the phases share: the run's configuration, data, model and plan."""
    suite: Suite
    spec: StrategySpec
    seed: int
    device: torch.device
    group: Group | None
    rank: int
    world: int
    strategy: Strategy
    reference_run: bool  # the unpadded reference (the ideal): scrambled rows, so its accuracy means nothing
    splits: Splits
    model: LSTMClassifier
    net: torch.nn.Module  # the model as trained: compiled, and wrapped in DDP for a job
    evaluated: torch.nn.Module  # the model as evaluated: compiled, outside DDP (on rank 0 alone)
    ready: Any  # DDP: the hook that times each rank's compute to its last gradient bucket
    checksum: str  # of the seeded weights
    initial: dict[str, torch.Tensor]  # the seeded weights, kept on the CPU
    kernel: str
    lstm_dtype: str
    steps: list[list[np.ndarray]]  # per step, every rank's batch
    per_epoch: int
    plan: list[np.ndarray]  # this rank's batches
    scales: list[float] | None  # DDP: each step's loss scale
    costliest: np.ndarray  # the batch of the largest shape
    check: RunCheck | None
    baseline_rss: int

    @property
    def train(self) -> Any:
        return self.splits.train

    @property
    def precision(self) -> Precision:
        """A fresh precision (and loss scaler where the LSTM runs fp16), as each phase starts with."""
        return Precision(self.device.type, self.suite.train.amp, self.lstm_dtype)


def prepare(suite: Suite, spec: StrategySpec, seed: int, device: torch.device, group: Group | None,
            data: Splits | None) -> Run:
    """The seed's data, the seeded model (its checksum), the plan of every rank's batches, the kernel and dtype
    its costliest batch runs, and the equivalence check on that path (its kernel, device and precision)."""
    if suite.threads:
        torch.set_num_threads(suite.threads)
    torch.backends.cudnn.benchmark = suite.train.cudnn_benchmark
    device = rank_device(device, group)
    rank, world = (group.rank, group.world) if group else (0, 1)
    reset_peak_memory(torch.device("cpu"))  # the run's own peak on CPU, not the imports' (Linux)
    baseline_rss = rss_bytes()
    strategy = Strategy(spec)
    reference_run = spec.is_reference
    splits = data if data is not None else make_data(suite.data, seed, suite.origin)
    train = splits.train
    model = model_for(suite.model, train, seed, suite.origin)
    checksum = weights_checksum(model)
    model.to(device)
    steps = plan_ranks(strategy, train, suite.train.batch_size, suite.train.epochs, seed, world)
    per_epoch = len(steps) // suite.train.epochs
    if reference_run and suite.train.until_target:  # it has no target to reach: one epoch measures its speed
        steps = steps[:per_epoch]
    plan = [step[rank] for step in steps]
    # DDP averages the ranks' gradients; scaling each rank's summed loss by world / (the step's count over
    # all ranks) makes the average the gradient of the mean over the union of the ranks' batches
    scales = [world / sum(strategy.scored(train, idx) for idx in step) for step in steps] if group else None
    # the costliest batch, where most time goes (a packed batch of equal lengths would run a fused kernel)
    costliest = max(plan, key=lambda idx: int(np.prod(strategy.shape(train, idx))))
    kernel, lstm_dtype = probe_kernel(model, strategy, train, costliest, device,
                                      Precision(device.type, suite.train.amp))
    check = None
    if not group and not reference_run:  # equivalence on the path this run times: its kernel, device, precision
        check = check_run(model, strategy, train, [check_batch(plan, train.lengths)], device, suite.train.amp,
                          note_for(spec, suite))
    net = torch.compile(model) if suite.train.compile else model  # the same parameters either way
    evaluated = net  # evaluation runs outside DDP, on rank 0 alone
    ready = None
    if group:
        net, ready = wrap(net, device)
    # the seeded weights, kept on the CPU (on a GPU a copy would count in the training's memory peak): put back
    # after warm-up, and the reference's
    initial = {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
    return Run(suite, spec, seed, device, group, rank, world, strategy, reference_run, splits, model, net, evaluated,
               ready,
               checksum, initial, kernel, lstm_dtype, steps, per_epoch, plan, scales, costliest, check,
               baseline_rss)


CHECKED = 8  # sequences in a run's own equivalence check: the longest of the data and 7 of its batch-mates, so
# that padding, truncation and the readout are exercised while the float64 per-sequence reference stays cheap


def check_batch(plan: list[np.ndarray], lengths: np.ndarray, size: int = CHECKED) -> np.ndarray:
    """The longest sequence and up to size - 1 others from the batch that holds it."""
    longest = int(lengths.argmax())
    batch = next((idx for idx in plan if longest in idx), np.array([longest]))
    return np.array([longest] + [int(i) for i in batch if i != longest][:size - 1])


def probe_kernel(model: LSTMClassifier, strategy: Strategy, data: Any, idx: np.ndarray,
                 device: torch.device, precision: Precision) -> tuple[str, str]:
    """The LSTM implementation a batch of this strategy runs, and the dtype it runs in (one forward pass,
    nothing trained)."""
    batch = strategy.collate(data, idx).to(device)
    with KernelProbe() as probe, precision.autocast():
        model(batch.tokens, batch.lengths, strategy.readout, batch.lengths_on_device)
    return probe.kernel, probe.dtype


def check_model(suite: Any) -> None:
    """The suite's own model, built for its first seed and run once on a few examples with each readout: a
    factory that fails, or a model whose logits have the wrong shape or are not finite, is refused in one line
    before any run starts (validate and run call it). Nothing for lstmbench's own model."""
    if not suite.model.factory:
        return
    splits = make_data(suite.data, suite.seeds[0], suite.origin)
    model = model_for(suite.model, splits.train, suite.seeds[0], suite.origin)
    idx = np.arange(min(4, len(splits.train.lengths)))
    for readout in ("mask", "pack", "last"):
        batch = Strategy(StrategySpec(name="check", readout=readout)).collate(splits.train, idx)
        model.checked = False
        with torch.no_grad():
            try:
                model(batch.tokens, batch.lengths, readout)
            except SuiteError as e:
                raise SuiteError(suite.origin, e.path, e.message) from None
            except Exception as e:  # noqa: BLE001 - the user's forward: its error, one line, naming the key
                why = f"{suite.model.factory}'s model raised {one_line(e)} on a batch read with {readout}"
                raise SuiteError(suite.origin, "model.factory", why) from None
