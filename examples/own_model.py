"""Your own model and training loop, batched the way lstmbench measured fastest.

A model the harness does not have (a 2-layer bidirectional LSTM with attention pooling over its steps), your
own torch Dataset of (sequence, label) pairs, and a plain loop: lstmbench only supplies the batches
(`batch_sampler`, `collate`) and the exact bidirectional run over a padded batch (`bidirectional_lstm`).

    python examples/own_model.py                       # bucket-mask, 4,000 examples, 3 epochs
    python examples/own_model.py --strategy pack --examples 500

The task: does a sequence of random tokens hold more 7s than 3s? Lengths are long-tailed (4 to 300), so
padding to the batch's longest wastes most of a random batch, and bucketing wins on CPU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lstmbench.batching import batch_sampler, bidirectional_lstm, collate

BUCKET_MASK = {"name": "bucket-mask", "batching": "bucket", "padding": "batch", "readout": "mask"}


class CountingTask(Dataset):
    """Your data: token sequences, label 1 where 7 appears more often than 3."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        lengths = np.clip(rng.lognormal(np.log(30), 0.8, n), 4, 300).astype(int)
        self.sequences = [torch.from_numpy(rng.integers(1, 10, k)) for k in lengths]
        self.labels = [int((s == 7).sum() > (s == 3).sum()) for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.sequences[i], self.labels[i]


class AttentionLSTM(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM -> attention pooling over each sequence's own steps -> label."""

    def __init__(self, vocab: int = 10, embed: int = 16, hidden: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.score = nn.Linear(2 * hidden, 1)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # exact over the padding in both directions, on the fused kernel (no pack_padded_sequence)
        steps, _ = bidirectional_lstm(self.lstm, self.embed(inputs), lengths)
        scores = self.score(steps).squeeze(-1)
        scores = scores.masked_fill(torch.arange(inputs.shape[1]) >= lengths[:, None], float("-inf"))
        pooled = (scores.softmax(dim=1).unsqueeze(-1) * steps).sum(dim=1)
        return self.head(pooled)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--strategy", default="bucket-mask", help="a preset name, or bucket-mask")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args(argv)

    strategy = BUCKET_MASK if args.strategy == "bucket-mask" else args.strategy
    train, held_out = CountingTask(args.examples, seed=0), CountingTask(max(args.examples // 4, 8), seed=1)
    sampler = batch_sampler([len(s) for s in train.sequences], strategy, args.batch_size, seed=0)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate(strategy), num_workers=args.workers)
    torch.manual_seed(0)
    model = AttentionLSTM()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = last = float("nan")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a fresh shuffle each epoch, as DistributedSampler's
        total = 0.0
        for batch in loader:
            loss = F.cross_entropy(model(batch.inputs, batch.lengths), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch.labels)
        last = total / len(train)
        first = last if epoch == 0 else first
        print(f"epoch {epoch}: mean loss {last:.4f}")
    seconds = time.perf_counter() - start

    model.eval()
    evaluate = DataLoader(held_out, batch_size=64, collate_fn=collate(strategy))
    with torch.inference_mode():
        correct = sum(int((model(b.inputs, b.lengths).argmax(1) == b.labels).sum()) for b in evaluate)
    accuracy = correct / len(held_out)
    print(f"{args.strategy}: {seconds:.1f} s of training, held-out accuracy {accuracy:.3f}")
    return {"first_loss": first, "last_loss": last, "accuracy": accuracy, "seconds": seconds}


if __name__ == "__main__":
    main()
