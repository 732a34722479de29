"""Equivalence: does a strategy's batched loss and gradient equal processing each sequence alone?"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import Dataset
from .model import LSTMClassifier
from .strategies import Strategy


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
    loss = F.cross_entropy(model(batch.tokens, batch.lengths, strategy.readout), batch.labels)
    grads = _grads(model, loss)

    ref_loss = 0.0
    ref_grads = [torch.zeros_like(g) for g in grads]
    for i in idx:
        tokens = torch.from_numpy(data.sequence(int(i))).unsqueeze(0)
        lengths = torch.tensor([tokens.shape[1]])
        label = torch.from_numpy(data.labels[[int(i)]])
        one = F.cross_entropy(model(tokens, lengths, "last"), label) / len(idx)  # unpadded: last is exact
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
