"""Stage 1b, the strategy presets: the named compositions a suite lists (`mask`, `bucket`, ...), the ideal, and
the one-line descriptions `lstmbench strategies` prints. Apart from the schema (config), which changes for
other reasons."""
from __future__ import annotations

from typing import Any

from .config import StrategySpec

PRESETS: dict[str, dict[str, Any]] = {
    "naive": {"batching": "random", "padding": "global", "readout": "last"},
    "truncate": {"batching": "random", "padding": "truncate", "readout": "mask", "max_len": 64},
    "mask": {"batching": "random", "padding": "batch", "readout": "mask"},
    "pack": {"batching": "random", "padding": "batch", "readout": "pack"},
    "bucket": {"batching": "bucket", "padding": "batch", "readout": "pack"},
    # fairseq's default budget is 4096 tokens; 4096 = 32 sequences of 128 padded tokens
    "token_budget": {"batching": "token_budget", "padding": "batch", "readout": "mask", "max_tokens": 4096},
    # TF's bucket_by_sequence_length: fixed length ranges instead of a sort (edges suit lengths in the tens)
    "boundaries": {"batching": "boundaries", "padding": "batch", "readout": "pack", "boundaries": (16, 32, 64, 128)},
    # enforce_sorted=True on a batch sorted by length: skips pack_padded_sequence's own sort and unsort
    "sorted_pack": {"batching": "random", "padding": "batch", "readout": "pack_sorted"},
}


# The unpadded row: each batch's real tokens cut into equal-length rows (same batch size, same tokens, no
# padding) and read at the last step. Not a strategy a user would train with, and not what `efficiency`
# divides by: each run measures its own batches unpadded (train.measure_reference).
IDEAL = StrategySpec(name="ideal", batching="random", padding="reshape", readout="last")

DESCRIPTIONS = {
    "naive": "pad every sequence to the dataset's max length; read the output at the last padded step",
    "truncate": "cut sequences to max_len, pad to the batch's max, read at each sequence's true end",
    "mask": "pad to the batch's max length; read the output at each sequence's true end",
    "pack": "pad to the batch's max; run the LSTM on pack_padded_sequence",
    "bucket": "batches of similar lengths (batch order shuffled); pad to the batch's max; pack",
    "token_budget": "length-sorted batches filled up to max_tokens padded tokens (batch size varies); mask",
    "boundaries": "batches within fixed length ranges (boundaries, e.g. 16/32/64/128), order shuffled; pack",
    "sorted_pack": "pad to the batch's max, sort the batch by length, pack with enforce_sorted=True",
}
assert DESCRIPTIONS.keys() == PRESETS.keys()

CHOICE_HELP = {
    "batching": {"random": "a fresh shuffle each epoch, cut into batches",
                 "bucket": "shuffle, sort by length (within mega-batches of `megabatch` batches, if set), cut "
                           "into batches, shuffle the batch order",
                 "boundaries": "group by length range (boundaries), shuffle within each, cut into batches, "
                               "shuffle the batch order",
                 "token_budget": "sort by length, fill each batch while (size+1) x longest <= max_tokens, "
                                 "shuffle the batch order"},
    "padding": {"global": "pad to the longest sequence of the data set",
                "batch": "pad to the longest sequence of the batch",
                "truncate": "cut to max_len, then pad to the batch's longest"},
    "readout": {"last": "the output at the last (possibly padded) step: changes the computation",
                "mask": "the output at each sequence's true last step (exact; a bidirectional reverse direction "
                        "runs within each length)",
                "pack": "a PackedSequence: the LSTM never sees padding",
                "pack_sorted": "the batch sorted by length, packed with enforce_sorted=True (no sort inside)"},
    "framework": {"torch": "lstmbench's PyTorch loop (the default)",
                  "keras": "the same batches and weights trained by Keras (Embedding(mask_zero=True), "
                           "layers.LSTM), readout mask, with a backend: tensorflow | torch | jax; needs the keras "
                           "extra"},
    "options": {"pad_multiple": "round the padded time axis up to a multiple of N (with padding batch/global/"
                                "truncate), to measure what alignment buys"},
}
