"""The argument checks of the public batching API (lstmbench.batching): one per entry, each refusing a bad argument
with one BatchingError sentence that names it, before numpy or torch would fail deep inside (or, worse, go on
with a silently wrong value)."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BatchingError
from ..suite import MAX_SEED, StrategySpec, short, typename

INT64_MAX = 2**63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _integer(value: Any, low: int, high: int = INT64_MAX) -> bool:
    """An int or numpy integer (not a bool) in [low, high]."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and low <= value <= high


def _array(value: Any) -> np.ndarray | None:
    """`value` (a tensor, array or nested list) as a numpy array; None where it is ragged or no array at all."""
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    except (ValueError, TypeError, RuntimeError):
        return None
    return None if array.dtype == object else array


def _refuse_reshape(spec: StrategySpec) -> None:
    if spec.is_reference:
        raise BatchingError("the ideal (reshape) cuts batches into equal rows: a measuring device, not a batching")


# ----------------------------------------------------------------------------- batch_sampler
def sampler_arguments(lengths: Any, spec: StrategySpec, batch_size: Any, seed: Any, drop_last: Any,
                      num_replicas: Any, rank: Any) -> np.ndarray:
    """batch_sampler's arguments, checked: the lengths as an int64 array."""
    _refuse_reshape(spec)
    array = _lengths(lengths)
    if not _integer(batch_size, 1):
        raise BatchingError(f"batch_size must be an integer >= 1, got {short(batch_size)}")
    if not _integer(seed, 0, MAX_SEED):
        raise BatchingError(f"seed must be an integer from 0 to {MAX_SEED}, got {short(seed)}")
    if not isinstance(drop_last, (bool, np.bool_)):
        raise BatchingError(f"drop_last must be True or False, got {short(drop_last)}")
    if not _integer(num_replicas, 1):
        raise BatchingError(f"num_replicas must be an integer >= 1, got {short(num_replicas)}")
    if not _integer(rank, 0, num_replicas - 1):
        raise BatchingError(f"rank must be in [0, {num_replicas}), got {short(rank)}")
    if spec.deal == "balanced" and num_replicas == 1:
        raise BatchingError("deal balanced deals each step's batches over the ranks, so it needs num_replicas > 1, "
                            "got num_replicas=1")
    if drop_last and (num_replicas > 1 or spec.batching == "token_budget"):
        why = "under DDP every rank already has as many steps" if num_replicas > 1 else \
            "token_budget batches vary in size by design"
        raise BatchingError(f"drop_last does not apply here: {why}")
    if num_replicas > 1 and len(array) < 2 * num_replicas:
        raise BatchingError(f"{len(array)} examples cannot fill a batch on each of {num_replicas} ranks")
    return array.astype(np.int64)


def _lengths(lengths: Any) -> np.ndarray:
    array = _array(lengths)
    if array is None:
        raise BatchingError(f"lengths must be a non-empty 1-D sequence of integers, got {short(lengths)}")
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise BatchingError(f"lengths must be a non-empty 1-D sequence of integers, got {array.dtype} of shape "
                            f"{array.shape}")
    if array.min() < 1:
        raise BatchingError(f"every length must be >= 1 (an empty sequence has no last step): example "
                            f"{int(np.argmin(array))} has length {int(array.min())}")
    if int(array.max()) > INT64_MAX:
        raise BatchingError(f"every length must be at most 2**63 - 1 (int64): example {int(np.argmax(array))} "
                            f"has length {int(array.max())}")
    return array


# ----------------------------------------------------------------------------- collate
def collate_arguments(spec: StrategySpec, pad_value: Any, max_length: Any) -> int | float:
    """collate's arguments, checked: the pad value as a Python int or float."""
    _refuse_reshape(spec)
    is_number = isinstance(pad_value, numbers.Real) and not isinstance(pad_value, (bool, np.bool_))
    if not is_number or isinstance(pad_value, numbers.Integral) and not -INT64_MAX - 1 <= pad_value <= INT64_MAX:
        raise BatchingError(f"pad_value must be a number (an integer from -2**63 to 2**63 - 1, or a float), got "
                            f"{short(pad_value)}")
    if max_length is not None and not _integer(max_length, 1):
        raise BatchingError(f"max_length must be an integer >= 1, got {short(max_length)}")
    if spec.padding == "global" and max_length is None:  # said now, not in a DataLoader worker later
        raise BatchingError("padding global pads to the data set's longest sequence: pass collate(..., max_length=N)")
    return int(pad_value) if isinstance(pad_value, numbers.Integral) else float(pad_value)


def batch_pairs(pairs: Any, pad_value: int | float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The collate_fn's pairs as numpy arrays, checked: one kind of sequence, at least one step each, labels
    alike, and a pad value the inputs can hold."""
    if not isinstance(pairs, (list, tuple)):
        raise BatchingError(f"pairs must be a list of (sequence, label) pairs, got {typename(pairs)}")
    if not pairs:
        raise BatchingError("an empty batch: the sampler gave no indices")
    sequences, labels = zip(*(_pair(i, pair) for i, pair in enumerate(pairs)))
    if len({(s.ndim,) + s.shape[1:] for s in sequences}) > 1:
        kinds = sorted({"token ids" if s.ndim == 1 else f"[length, {s.shape[1]}] features" for s in sequences})
        raise BatchingError(f"the batch mixes sequence shapes: {', '.join(kinds)}")
    if len({y.ndim for y in labels}) > 1:
        raise BatchingError("labels must be all scalars (one per sequence) or all 1-D (one per step)")
    token_ids = sequences[0].ndim == 1
    if token_ids and not (float(pad_value).is_integer() and -INT64_MAX - 1 <= pad_value <= INT64_MAX):
        raise BatchingError(f"pad_value must be an integer for token ids (from -2**63 to 2**63 - 1), got "
                            f"{short(pad_value)}")
    if not token_ids and np.isfinite(pad_value) and abs(pad_value) > FLOAT32_MAX:
        raise BatchingError(f"pad_value must fit float32 features (at most {FLOAT32_MAX:.2g} in magnitude), got "
                            f"{short(pad_value)}")
    return list(sequences), list(labels)


def _pair(i: int, pair: Any) -> tuple[np.ndarray, np.ndarray]:
    """Item i of the batch: its sequence and label as arrays, checked."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise BatchingError(f"item {i} of the batch is not a (sequence, label) pair")
    seq, label = _array(pair[0]), _array(pair[1])
    if seq is None:
        raise BatchingError(f"item {i}: a sequence must be a rectangular array of numbers, got {short(pair[0])}")
    if seq.ndim not in (1, 2) or len(seq) == 0:
        raise BatchingError(f"item {i}: a sequence must be 1-D (token ids) or 2-D [length, features] with at "
                            f"least one step, got shape {seq.shape}")
    if seq.ndim == 1 and not np.issubdtype(seq.dtype, np.integer):
        raise BatchingError(f"item {i}: 1-D sequences are token ids and must be integers, got {seq.dtype}")
    if seq.ndim == 1 and (seq.min() < 0 or int(seq.max()) > INT64_MAX):
        bad = seq.min() if seq.min() < 0 else seq.max()
        raise BatchingError(f"item {i}: token ids must be from 0 to 2**63 - 1 (nn.Embedding indices), got {bad}")
    if seq.ndim == 2 and seq.dtype.kind not in "biuf":
        raise BatchingError(f"item {i}: 2-D sequences are [length, features] and must hold real numbers, got "
                            f"{seq.dtype}")
    if label is not None and label.ndim > 1:
        raise BatchingError(f"item {i}: a label must be a scalar (one per sequence) or 1-D (one per step), got "
                            f"shape {label.shape}")
    if label is None or label.dtype.kind not in ("iu" if label.ndim else "iuf"):
        what = "per-step labels must be integers" if label is not None and label.ndim else \
            "labels must be integers (or floats, kept as regression targets)"
        raise BatchingError(f"item {i}: {what}, got {short(pair[1])}")
    if label.ndim == 1 and len(label) != len(seq):
        raise BatchingError(f"item {i}: {len(label)} per-step labels for a sequence of {len(seq)} steps")
    return seq, label


# ----------------------------------------------------------------------------- last_step
def last_step_arguments(output: Any, lengths: Any, bidirectional: Any) -> None:
    """last_step's arguments, checked: a batch-first [B, T, H] output and B integer lengths in [1, T] (any
    device; lengths on the GPU are read back to check them, which waits for them)."""
    if not isinstance(output, torch.Tensor) or output.dim() != 3:
        got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else typename(output)
        raise BatchingError(f"last_step: output must be a batch-first [B, T, H] LSTM output, got {got}")
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise BatchingError(f"last_step: bidirectional must be True or False, got {short(bidirectional)}")
    if bidirectional and output.shape[2] % 2:
        raise BatchingError(f"last_step: a bidirectional output holds both directions (2H features), so its last "
                            f"dimension must be even, got {output.shape[2]}")
    what = "last_step: lengths must be a tensor of integers (e.g. batch.lengths)"
    if not isinstance(lengths, torch.Tensor):
        raise BatchingError(f"{what}, got {typename(lengths)}")
    _length_values(what, lengths, output.shape[0], output.shape[1],
                   "one per row of output (a time-major [T, B, H] output must be transposed first)")


def _length_values(what: str, lengths: torch.Tensor, batch: int, steps: int, per: str) -> None:
    """`lengths` as `what` says (its first words name the function): integers, [batch] of them, in [1, steps]."""
    where = what.split(":")[0]
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise BatchingError(f"{what}, got {lengths.dtype}")
    if tuple(lengths.shape) != (batch,):
        raise BatchingError(f"{where}: lengths must hold {batch} lengths, {per}, got shape {tuple(lengths.shape)}")
    if batch and (lengths.min() < 1 or lengths.max() > steps):
        bad = int(lengths.min()) if lengths.min() < 1 else int(lengths.max())
        raise BatchingError(f"{where}: lengths must be in [1, {steps}] (the time steps), got {bad}")


# ----------------------------------------------------------------------------- bidirectional_lstm
def lstm_arguments(lstm: Any, x: Any, lengths: Any) -> torch.Tensor:
    """bidirectional_lstm's arguments, checked: the lengths as an int64 tensor (on their own device)."""
    if not isinstance(lstm, nn.LSTM):
        raise BatchingError(f"bidirectional_lstm: lstm must be an nn.LSTM, got {type(lstm).__name__}")
    if lstm.proj_size:
        raise BatchingError("bidirectional_lstm: an nn.LSTM with proj_size is not supported")
    layout = "[B, T, input] (the LSTM is batch_first)" if lstm.batch_first else "[T, B, input] (time-major)"
    _inputs("bidirectional_lstm", x, f"3-D, {layout}", "the LSTM's", lstm.input_size)
    weight = lstm.weight_ih_l0
    if x.device != weight.device:
        raise BatchingError(f"bidirectional_lstm: x is on {x.device}, but it must be on the LSTM's device "
                            f"({weight.device})")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise BatchingError(f"bidirectional_lstm: x is {x.dtype}, but its dtype must match the LSTM's weights "
                            f"({weight.dtype})")
    what = "bidirectional_lstm: lengths must be an integer tensor or a list of ints"
    if not isinstance(lengths, torch.Tensor):
        array = _array(lengths)
        if array is None or array.size and (not np.issubdtype(array.dtype, np.integer) or array.max() > INT64_MAX):
            raise BatchingError(f"{what}, got {short(lengths)}")
        lengths = torch.from_numpy(array.astype(np.int64))
    batch, steps = (x.shape[0], x.shape[1]) if lstm.batch_first else (x.shape[1], x.shape[0])
    _length_values(what, lengths, batch, steps, f"one per sequence of x {layout}")
    return lengths.to(torch.int64)


def _inputs(who: str, x: Any, shape: str, whose: str, input_size: int) -> None:
    """x is a 3-D tensor with the recurrent layer's input_size features per step (bidirectional_lstm, run_rnn)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else typename(x)
        raise BatchingError(f"{who}: x must be {shape}, got {got}")
    if x.shape[2] != input_size:
        raise BatchingError(f"{who}: x has {x.shape[2]} features per step, but {whose} input_size is {input_size}")


# ----------------------------------------------------------------------------- run_rnn
READOUTS = ("pack", "mask", "last")  # what a model's forward is asked for (pack_sorted arrives as pack)


def rnn_arguments(rnn: Any, x: Any, lengths: Any, readout: Any) -> None:
    """run_rnn's arguments, checked without waiting for a device: lengths are read back only where they are on
    the CPU (pack needs them there anyway; a GPU step never waits for this check)."""
    if not isinstance(rnn, (nn.LSTM, nn.GRU)):
        raise BatchingError(f"run_rnn: rnn must be an nn.LSTM or an nn.GRU, got {type(rnn).__name__}")
    if not rnn.batch_first:
        raise BatchingError("run_rnn: rnn must be batch_first=True (inputs arrive [B, T, ...])")
    if isinstance(rnn, nn.LSTM) and rnn.proj_size:
        raise BatchingError("run_rnn: an nn.LSTM with proj_size is not supported")
    if readout not in READOUTS:
        raise BatchingError(f"run_rnn: readout must be one of {', '.join(READOUTS)}, got {short(readout)}")
    _inputs("run_rnn", x, "[B, T, input]", "the rnn's", rnn.input_size)
    what = "run_rnn: lengths must be a tensor of integers (the lengths the model was given)"
    if not isinstance(lengths, torch.Tensor):
        raise BatchingError(f"{what}, got {typename(lengths)}")
    if readout == "pack" and lengths.device.type != "cpu":
        raise BatchingError(f"run_rnn: readout pack needs the lengths on the CPU, got them on {lengths.device}")
    if lengths.device.type == "cpu":
        _length_values(what, lengths, x.shape[0], x.shape[1], "one per sequence of x")
    elif tuple(lengths.shape) != (x.shape[0],):
        raise BatchingError(f"run_rnn: lengths must hold {x.shape[0]} lengths, one per sequence of x, got shape "
                            f"{tuple(lengths.shape)}")

