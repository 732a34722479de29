"""Your model, not ours: a suite's `model: {factory: "models.py:build", options: {...}}` names a function that
returns an nn.Module, and every strategy of a seed trains it from the same seeded weights.

The protocol. The factory is called after the seed is set, with a `ModelSpec` (what the data says: vocabulary
or feature count, classes, task; and the suite's options). Its module's `forward(inputs, lengths, readout)`:
  inputs   [B, T] int64 tokens (0 is padding), or [B, T, F] float features; right-padded
  lengths  [B] int64: on the CPU when readout is "pack" (pack_padded_sequence reads them there), else on the
           inputs' device (nothing in a step waits for the device)
  readout  "pack" | "mask" | "last": how the strategy asks to read its padded batch; the batch comes sorted
           longest first for "pack". `lstmbench.batching.run_rnn(rnn, x, lengths, readout)` runs an nn.LSTM
           or nn.GRU the way each one needs, so a model written with it supports every strategy.
returns logits [B, classes], or [B, T, classes] for the tag task. A model that ignores `readout` still gets the
batching and padding strategies; `verify` and each run's own check say what it computes.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import SuiteError
from ..strategies import PACKED
from ..suite import FACTORY, MAX_SOURCE_BYTES, ModelConfig, Unreadable, read_bytes

BUILTIN = ""  # model.factory unset: lstmbench's own LSTMClassifier
FILE_MODULE = "lstmbench_user_model_"  # the module name a factory's file is imported under (+ its path's hash)


@dataclass(frozen=True)
class ModelSpec:
    """What a factory is called with: what the data says, and the suite's `model.options`."""
    vocab_size: int  # token ids are in [0, vocab_size), 0 the padding (0 for feature sequences)
    num_features: int  # features per step of a series (0 for tokens)
    num_classes: int
    task: str  # classify (one label per sequence) | tag (one label per step)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Factory:
    """A resolved `model.factory`: where its code is, and a hash of that source."""
    name: str  # as the suite wrote it
    path: Path | None  # the file (a file factory, or a module's file)
    module: str  # the module to import: a file factory's own name, or the dotted module
    attr: str
    source_hash: str

    @property
    def is_file(self) -> bool:
        """A file beside the suite (imported under a name of its own), not an importable module."""
        return self.module.startswith(FILE_MODULE)


def resolve_model(cfg: ModelConfig, origin: str) -> Factory | None:
    """The suite's factory, found and hashed (its code not run); None for the built-in model. A file factory
    is relative to the suite file (`origin`); a module factory is importable (`package.module:function`)."""
    text = cfg.factory
    if text == BUILTIN:
        return None
    match = FACTORY.fullmatch(text)
    if not match:  # the schema checked the form: a row's config read back can still get here
        raise SuiteError(origin, "model.factory", f"must be file.py:function or package.module:function, got "
                                                  f"{text!r}")
    if match["file"]:
        path = (Path(origin).parent if origin else Path.cwd()) / match["file"]
        try:
            source = read_bytes(path, MAX_SOURCE_BYTES, "a model file")
        except Unreadable as e:
            raise SuiteError(origin, "model.factory", f"{text}: cannot read its file: {e}") from None
        name = f"{FILE_MODULE}{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        return Factory(text, path, name, match["name"], _hash(source))
    spec = importlib.util.find_spec(match["module"].split(".")[0])
    if spec is None:
        raise SuiteError(origin, "model.factory", f"no module named {match['module'].split('.')[0]!r} to import "
                                                  f"(from {text})")
    file = _module_file(match["module"])  # imports the module's parent package, as finding it does
    return Factory(text, file, match["module"], match["attr"], _hash(file.read_bytes()) if file and file.is_file()
                   else "")


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin != "built-in" else None


def _hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:16]


def load(factory: Factory, origin: str) -> Callable[[ModelSpec], nn.Module]:
    """The factory function, its file or module imported (its code runs here)."""
    try:
        if factory.is_file:
            module = sys.modules.get(factory.module)
            if module is None:
                spec = importlib.util.spec_from_file_location(factory.module, factory.path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[factory.module] = module  # pickling a model's classes (DDP, workers) finds them
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(factory.module)
    except Exception as e:  # noqa: BLE001 - the user's code: its error, one line, naming the key
        raise SuiteError(origin, "model.factory", f"importing {factory.name} raised {one_line(e)}") from None
    function = getattr(module, factory.attr, None)
    if not callable(function):
        where = factory.path.name if factory.is_file else factory.module
        raise SuiteError(origin, "model.factory", f"{factory.name}: {where} has no function {factory.attr!r}")
    return function


def build(cfg: ModelConfig, origin: str, spec: ModelSpec) -> nn.Module:
    """The user's model from the suite's factory, wrapped to the harness's call (UserModel). Call it after the
    seed is set: every strategy of a seed then gets the same weights."""
    factory = resolve_model(cfg, origin)
    function = load(factory, origin)
    try:
        module = function(spec)
    except Exception as e:  # noqa: BLE001 - the user's code
        raise SuiteError(origin, "model.factory", f"{factory.name} raised {one_line(e)}") from None
    if not isinstance(module, nn.Module):
        raise SuiteError(origin, "model.factory", f"{factory.name} returned {type(module).__name__}, not an "
                                                  "nn.Module")
    return UserModel(module, factory.name, factory.source_hash, spec)


class UserModel(nn.Module):
    """The user's module behind the harness's call `model(tokens, lengths, readout, on_device)`: lengths on the
    CPU for the packed readouts, on the device otherwise; pack_sorted read as pack; features in the weights'
    dtype. Its logits are checked once, on the first call: shape and finiteness, in one line each."""

    def __init__(self, module: nn.Module, factory: str, source_hash: str, spec: ModelSpec):
        super().__init__()
        self.module = module
        self.factory, self.source_hash, self.spec = factory, source_hash, spec
        self.tag = spec.task == "tag"
        self.checked = False

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, readout: str,
                on_device: torch.Tensor | None = None) -> torch.Tensor:
        if tokens.is_floating_point():
            tokens = tokens.to(next(self.module.parameters()).dtype)
        if readout in PACKED:
            logits = self.module(tokens, lengths, "pack")
        else:
            logits = self.module(tokens, on_device if on_device is not None else lengths.to(tokens.device), readout)
        if not self.checked:
            self._check(tokens, logits)
        return logits

    def _check(self, tokens: torch.Tensor, logits: Any) -> None:
        """The first output: the shape the task needs, and finite (read once, off the timed steps' count)."""
        batch, steps, classes = tokens.shape[0], tokens.shape[1], self.spec.num_classes
        want = (batch, steps, classes) if self.tag else (batch, classes)
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        if got != want:
            what = f"{batch} sequences of {steps} steps" if self.tag else f"{batch} sequences"
            raise SuiteError("", "model.factory", f"{self.factory}'s model returned {_shape(got)} for {what} and "
                                                  f"{classes} classes ({self.spec.task}); expected {_shape(want)}")
        if not bool(torch.isfinite(logits.detach()).all()):
            raise SuiteError("", "model.factory", f"{self.factory}'s model returned logits that are not finite "
                                                  "(NaN or infinite) on its first batch")
        self.checked = True


def _shape(shape: Any) -> str:
    return f"shape {shape}" if isinstance(shape, tuple) else f"a {shape}"


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_bidirectional(model: nn.Module) -> bool:
    """Whether any recurrent layer of the model runs both directions."""
    return any(isinstance(m, nn.RNNBase) and m.bidirectional for m in model.modules())


def without_dropout(model: nn.Module) -> nn.Module:
    """Every dropout of the model set to 0 (a recurrent layer's between layers, nn.Dropout's): the reference
    and the batch must see the same function."""
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            m.dropout = 0.0
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
    return model

