"""Verify, distributed forms: each strategy's DDP form on gloo ranks (`verify --nproc N`) against one process on
the union of the ranks' batches: every example once per epoch, the all-reduced loss and gradients equal. Runs
on every rank of the job (ddp_worker); rank 0 returns the verdicts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import IGNORE, Dataset, make_data
from ..measure import EQUIVALENT, MISMATCH, TOLERANCE, LSTMClassifier, grads_of, loss_of, model_for
from ..strategies import Strategy, coverage_problems, rank_epochs
from ..suite import Suite


def distributed_table(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a distributed form (DistributedVerdict dicts, as the ranks hand them back)."""
    return [{"strategy": v["strategy"], "deal": v["deal"], "steps": v["steps"],
             "max rel. error, loss": f"{v['loss_rel_error']:.1e}",
             "max rel. error, gradients": f"{v['grad_rel_error']:.1e}",
             "each example once per epoch": v["coverage"] or "yes", "verdict": v["verdict"]} for v in verdicts]


@dataclass(frozen=True)
class DistributedVerdict:
    strategy: str
    deal: str
    steps: int  # steps checked
    loss_rel_error: float  # the all-reduced loss against one process's loss on the union of the batches
    grad_rel_error: float  # the all-reduced gradients against one process's on the union of the batches
    coverage: str  # '' when every example is seen once per epoch, one batch per rank per step; else what is wrong
    verdict: str  # equivalent | MISMATCH

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify_distributed(suite: Suite, group: Any, batches: int = 3,
                       tolerance: float = TOLERANCE) -> list[dict[str, Any]] | None:
    """On every rank of a DDP job: for each strategy's distributed form, train-step the first `batches` steps
    (the step holding the longest sequence last) through DistributedDataParallel in float64, and compare the
    all-reduced loss and gradients with one process computing the mean loss over the union of the ranks'
    batches. Rank 0 returns the verdicts (as dicts); the other ranks None."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    seed = suite.seeds[0]
    data = make_data(suite.data, seed, suite.origin).train
    model = model_for(suite.model, data, seed, suite.origin).double()
    model.eval()  # dropout off: the union and the ranks must see the same function
    ddp = DistributedDataParallel(model)
    verdicts = []
    for spec in suite.strategies:
        strategy = Strategy(spec)
        epochs = rank_epochs(strategy, data, suite.train.batch_size, suite.train.epochs, seed, group.world)
        problems = coverage_problems(epochs, len(data), group.world)
        steps = epochs[0]
        longest = next(step for step in steps if any(data.lengths.argmax() in idx for idx in step))
        loss_err = grad_err = 0.0
        for step in steps[:max(batches - 1, 0)] + [longest]:
            count = sum(strategy.scored(data, idx) for idx in step)
            batch = strategy.collate(data, step[group.rank])
            ddp.zero_grad(set_to_none=True)
            output = ddp(batch.tokens, batch.lengths, strategy.readout)
            loss = loss_of(output, batch.labels, "sum") * (group.world / count)
            loss.backward()
            union_loss = loss.detach() / group.world
            dist.all_reduce(union_loss)
            if group.rank == 0:
                ref_loss, ref_grads = _union(model, strategy, data, step)
                loss_err = max(loss_err, abs(float(union_loss) - ref_loss) / max(abs(ref_loss), 1e-30))
                grad_err = max(grad_err, *(float((p.grad - r).abs().max() / r.abs().max().clamp_min(1e-30))
                                          for p, r in zip(model.parameters(), ref_grads)))
        same = loss_err <= tolerance and grad_err <= tolerance and not problems
        verdicts.append(DistributedVerdict(spec.name, spec.deal, min(batches, len(steps)), loss_err, grad_err,
                                           "; ".join(problems), EQUIVALENT if same else MISMATCH).to_dict())
    return verdicts if group.rank == 0 else None


def _union(model: LSTMClassifier, strategy: Strategy, data: Dataset,
           step: list[np.ndarray]) -> tuple[float, list[torch.Tensor]]:
    """One process: the mean loss over every rank's batch of the step (each padded as its rank pads it),
    counting the scored labels itself, not through the plan's count the ranks scale by."""
    batches = [strategy.collate(data, idx) for idx in step]
    scored = sum(int((b.labels != IGNORE).sum()) for b in batches)
    loss = sum(loss_of(model(b.tokens, b.lengths, strategy.readout), b.labels, "sum") for b in batches) / scored
    return float(loss.detach()), grads_of(model, loss)
