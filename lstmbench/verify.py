"""Equivalence: does a strategy's batched loss and gradient equal processing each sequence alone?"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import Dataset, make_data
from .model import LSTMClassifier, loss_of, model_for
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
