"""Equivalence: does a strategy's batched loss and gradient equal processing each sequence alone?"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import IGNORE, Dataset, make_data
from .model import LSTMClassifier, loss_of, model_for
from .ranks import coverage_problems, rank_epochs
from .strategies import Strategy, note_for, plan_epochs
from .suite import Suite


@dataclass(frozen=True)
class Equivalence:
    loss_batched: float
    loss_reference: float
    loss_rel_error: float
    grad_rel_error: float  # max over parameters of max|g - g_ref| / max|g_ref|

    def holds(self, tolerance: float) -> bool:
        return self.loss_rel_error <= tolerance and self.grad_rel_error <= tolerance


def check_batch(model: LSTMClassifier, strategy: Strategy, data: Dataset, idx: np.ndarray) -> Equivalence:
    """Compare the strategy's mean loss and gradients on batch `idx` with the per-sequence reference:
    each sequence run alone, unpadded and untruncated, losses and gradients averaged."""
    batch = strategy.collate(data, idx)
    loss = loss_of(model(batch.tokens, batch.lengths, strategy.readout), batch.labels)
    grads = _grads(model, loss)

    # the reference averages what the batch averages: sequences, or (tag task) every real step
    denominator = int(data.lengths[idx].sum()) if data.tagged else len(idx)
    ref_loss = 0.0
    ref_grads = [torch.zeros_like(g) for g in grads]
    for i in idx:
        tokens = torch.from_numpy(data.sequence(int(i))).unsqueeze(0)
        n = tokens.shape[1]
        lengths = torch.tensor([n])
        label = (torch.from_numpy(data.padded_tags[[int(i)], :n]) if data.tagged
                 else torch.from_numpy(data.labels[[int(i)]]))
        # unpadded, so the readout `last` is exact
        one = loss_of(model(tokens, lengths, "last"), label, reduction="sum") / denominator
        ref_loss += float(one.detach())
        for acc, g in zip(ref_grads, _grads(model, one)):
            acc += g
    loss_err = abs(float(loss.detach()) - ref_loss) / max(abs(ref_loss), 1e-30)
    grad_err = max(float((g - r).abs().max() / r.abs().max().clamp_min(1e-30)) for g, r in zip(grads, ref_grads))
    return Equivalence(float(loss.detach()), ref_loss, loss_err, grad_err)


def _grads(model: LSTMClassifier, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]


EQUIVALENT, AS_DESIGNED, MISMATCH = "equivalent", "differs as designed", "MISMATCH"
TOLERANCE = 1e-7  # in float64 an exact strategy lands near 1e-12 and a wrong one above 1e-3


@dataclass(frozen=True)
class Verdict:
    strategy: str
    batches: int
    loss_rel_error: float  # the largest over the checked batches
    grad_rel_error: float
    note: str  # how the strategy changes the computation ('' = it claims to be exact)
    verdict: str  # equivalent | differs as designed | MISMATCH


def verdict_table(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """One row a strategy, as `lstmbench verify` shows it."""
    return [{"strategy": v.strategy, "batches": v.batches, "max rel. error, loss": f"{v.loss_rel_error:.1e}",
             "max rel. error, gradients": f"{v.grad_rel_error:.1e}",
             "verdict": v.verdict + (f": {v.note}" if v.verdict == AS_DESIGNED else "")} for v in verdicts]


def distributed_table(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a distributed form (DistributedVerdict dicts, as the ranks hand them back)."""
    return [{"strategy": v["strategy"], "deal": v["deal"], "steps": v["steps"],
             "max rel. error, loss": f"{v['loss_rel_error']:.1e}",
             "max rel. error, gradients": f"{v['grad_rel_error']:.1e}",
             "each example once per epoch": v["coverage"] or "yes", "verdict": v["verdict"]} for v in verdicts]


def verify_suite(suite: Suite, batches: int = 3, tolerance: float = TOLERANCE) -> list[Verdict]:
    """Check every strategy of `suite` on real batches of its data (first seed), in float64: the first
    `batches` batches of the strategy's own plan, the last one replaced by the batch holding the longest
    sequence. A strategy that claims to ignore padding must match per-sequence processing."""
    seed = suite.seeds[0]
    data = make_data(suite.data, seed, suite.origin).train
    model = model_for(suite.model, data, seed).double()
    model.eval()  # dropout off: the reference and the batch must see the same function
    verdicts = []
    for spec in suite.strategies:
        strategy = Strategy(spec)
        plan = plan_epochs(strategy, data.lengths, suite.train.batch_size, 1, seed)
        longest = next(idx for idx in plan if data.lengths.argmax() in idx)
        chosen = plan[:max(batches - 1, 0)] + [longest]
        results = [check_batch(model, strategy, data, idx) for idx in chosen]
        loss_err = max(r.loss_rel_error for r in results)
        grad_err = max(r.grad_rel_error for r in results)
        note = note_for(spec, suite)
        same = loss_err <= tolerance and grad_err <= tolerance
        verdict = EQUIVALENT if same else (AS_DESIGNED if note else MISMATCH)
        verdicts.append(Verdict(spec.name, len(chosen), loss_err, grad_err, note, verdict))
    return verdicts


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
    model = model_for(suite.model, data, seed).double()
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
            loss = loss_of(ddp(batch.tokens, batch.lengths, strategy.readout), batch.labels, "sum") * (group.world / count)
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
    return float(loss.detach()), _grads(model, loss)
