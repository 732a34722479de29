"""Stage 1, the suite: YAML -> validated, frozen `Suite`; `--set` overrides; sweeps; the suite hash. Its parts' schema
is in config, the presets in presets (both re-exported here)."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ..errors import SuiteError
from .config import (
    MAX_PADDED_CELLS,
    MAX_SEQUENCE,
    DataConfig,
    Device,
    LaunchConfig,
    Lengths,
    LoaderConfig,
    ModelConfig,
    StrategySpec,
    TrainConfig,
)
from .files import MAX_SUITE_BYTES, Unreadable, YamlRefused, load_yaml, read_text
from .presets import IDEAL, PRESETS
from .schema import At, build, names, short, suggest, typename

__all__ = ["Suite", "load_suite", "suite_from_dict", "apply_override", "expand_sweep", "parse_strategy",  # and the
           "DataConfig", "LaunchConfig", "Lengths", "LoaderConfig", "ModelConfig", "StrategySpec",  # parts
           "TrainConfig", "MAX_PADDED_CELLS", "MAX_SEQUENCE", "IDEAL", "PRESETS"]  # from config and presets

SWEEP_FIXED = {  # keys a sweep cannot vary, and why
    "name": "the name is the results folder that every variant's rows go to (and --resume reads)",
    "sweep": "a sweep does not sweep itself",
    "seeds": "every variant runs every seed; list the seeds in `seeds:`",
}


MAX_THREADS = 1024  # more threads than any machine has cores: a typo, and each thread costs memory
MAX_NAME = 100  # a suite's name: its results folder, under the 200 characters a stored row's suite may have


@dataclass(frozen=True)
class Suite:
    name: str
    strategies: tuple[StrategySpec, ...]
    description: str = ""
    device: Device = "cpu"  # cpu | cuda | auto (cuda when available)
    seeds: tuple[int, ...] = (0,)  # one run per strategy and seed; a seed fixes the data and the init
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores)
    ideal: bool = True  # also run the unpadded fixed-size-batch row (efficiency has its own per-run reference)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    sweep: dict = field(default_factory=dict)  # key path -> values: one variant of the suite per combination
    point: dict = field(default_factory=dict)  # in a variant: key path -> its value (set by expand_sweep)
    origin: str = ""  # the file it came from (not part of the hash)

    CHOICES = {"device": get_args(Device)}

    def check(self, at: At) -> None:
        self._check_name(at)
        if not self.seeds:
            at.fail("seeds", "must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            at.fail("seeds", f"must not repeat a seed, got {list(self.seeds)}")
        if not self.strategies:
            at.fail("strategies", "must list at least one strategy")
        at.nonnegative("threads", self.threads)
        if self.threads > MAX_THREADS:
            at.fail("threads", f"must be at most {MAX_THREADS} (0 = torch's default), got {self.threads}")
        self._check_sweep(at)
        if self.train.until_target and self.launch.nproc > 1:
            at.fail("train.until_target", "is for one process; under DDP (launch.nproc > 1) epochs decide")
        self._check_strategies(at)

    def _check_name(self, at: At) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", self.name):
            at.fail("name", "must be letters, digits, '_', '.' or '-' (it names a results folder), got "
                            f"{short(self.name)}")
        if len(self.name) > MAX_NAME:  # the folder and its files' names must fit the file system's 255 bytes
            at.fail("name", f"must be at most {MAX_NAME} characters (it names a results folder), got {len(self.name)}")
        if self.name == "report":  # readers leave report/ folders out: the suite's rows would never be read
            at.fail("name", "must not be 'report', the name of every suite's report folder")

    def _check_sweep(self, at: At) -> None:
        if len(self.sweep) > 2:
            at.fail("sweep", f"varies at most two keys, got {len(self.sweep)}")
        for key, values in self.sweep.items():
            if not isinstance(key, str) or not isinstance(values, list) or not values:
                at.fail(f"sweep.{key}", f"must be a non-empty list of values, got {short(values)}")
            if key.split(".")[0] in ("name", "sweep", "seeds"):
                at.fail(f"sweep.{key}", f"cannot be swept: {SWEEP_FIXED[key.split('.')[0]]}")

    def _check_strategies(self, at: At) -> None:
        names = [s.name for s in self.strategies]
        if IDEAL.name in names:
            at.fail(f"strategies[{names.index(IDEAL.name)}]", "the name 'ideal' is reserved for the zero-padding "
                                                              "reference, which runs unless `ideal: false`")
        for i, n in enumerate(names):
            if n in names[:i]:
                at.fail(f"strategies[{i}]", f"duplicate strategy name {short(n)}; give one a `name:`")
        keras = next((i for i, s in enumerate(self.strategies) if s.framework == "keras"), None)
        if keras is not None:
            self._check_keras(at, f"strategies[{keras}]")

    def _check_keras(self, at: At, where: str) -> None:
        """What a Keras strategy's twin of lstmbench's model does not cover (yet), each refused in one line."""
        unsupported = [
            (self.model.factory, "model.factory", "your own model has no Keras twin; Keras strategies train "
                                                  "lstmbench's model"),
            (self.data.task != "classify", "data.task", "Keras strategies classify sequences; tag is not mapped"),
            (self.model.dropout > 0, "model.dropout", "Keras's LSTM dropout (one mask a sequence, on each layer's "
                                                      "inputs) is not PyTorch's between layers; Keras strategies "
                                                      "train without it"),
            (self.data.source in ("ucr", "series"), "data.source", f"Keras strategies read token ids (mask_zero); "
                                                                   f"{self.data.source} data are features"),
            (self.launch.nproc > 1, "launch.nproc", "Keras strategies train in one process; DDP is PyTorch's"),
            (self.train.amp != "none", "train.amp", "Keras strategies train in float32"),
            (self.train.compile, "train.compile", "torch.compile does not apply to a Keras strategy"),
            (self.train.loader.workers > 0, "train.loader.workers", "Keras strategies collate in their own "
                                                                    "process, without a DataLoader"),
        ]
        for bad, key, why in unsupported:
            if bad:
                at.fail(key, f"{why} (as {where} asks)")

    def to_dict(self) -> dict[str, Any]:
        """The resolved suite as plain JSON types (what rows store and `suite_from_dict` reads back)."""
        d = dataclasses.asdict(self)
        d.pop("origin")
        d.pop("point")  # rows carry it as `sweep`
        # keys added after results were stored leave the hash alone at their defaults, so stored results
        # still match the suite that made them
        if d["launch"] == dataclasses.asdict(LaunchConfig()):
            d.pop("launch")
        for key in ("eval_path", "max_length"):
            if not d["data"][key]:
                d["data"].pop(key)
        if d["train"]["loader"] == dataclasses.asdict(LoaderConfig()):
            d["train"].pop("loader")
        for key, default in (("until_target", False), ("max_time_s", 0.0)):
            if d["train"][key] == default:
                d["train"].pop(key)
        for spec in d["strategies"]:
            for key, default in (("deal", "per_rank"), ("framework", "torch"), ("backend", "")):
                if spec[key] == default:
                    spec.pop(key)
        for key, default in (("factory", ""), ("options", {})):
            if d["model"][key] == default:
                d["model"].pop(key)
        return json.loads(json.dumps(d))

    @property
    def hash(self) -> str:
        """Hash of the resolved suite: rows with the same hash were made by the same configuration."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def eval_batch_size(self) -> int:
        return self.train.eval_batch_size or self.train.batch_size


# ----------------------------------------------------------------------------- loading
def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str | None = None,
               allow_code: bool = False) -> Suite:
    """Read, override and validate a suite file. A suite that names its own model (model.factory) names
    Python code: refused unless `allow_code` (a suite file from someone else could run anything)."""
    file = str(path)
    try:
        raw = load_yaml(read_text(path, MAX_SUITE_BYTES, "a suite file"))
    except Unreadable as e:
        raise SuiteError(file, "", str(e).removeprefix(f"{file}: ")) from None
    except YamlRefused as e:
        raise SuiteError(file, "", f"invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SuiteError(file, "", f"must be a mapping of keys, got {typename(raw)}")
    for item in overrides:
        apply_override(raw, item, file)
    if device is not None:
        raw["device"] = device
    suite = suite_from_dict(raw, file)
    if not allow_code:
        refuse_code(suite)
    return suite


def refuse_code(suite: Suite) -> None:
    """A suite naming a model factory (itself, or in a sweep) is refused: its code would run here."""
    named = [v.model.factory for v in expand_sweep(suite) if v.model.factory]
    if named:
        raise SuiteError(suite.origin, "model.factory", f"{named[0]!r} is Python code that lstmbench would import "
                                                        "and run; give --allow-code to run a suite's own model (only "
                                                        "for a suite you trust)")


def apply_override(raw: dict, item: str, file: str) -> None:
    """`key.path=value` (value parsed as YAML) into the raw mapping; list items by index."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SuiteError(file, "--set", f"expected key.path=value, got {short(item)}")
    try:
        parsed = load_yaml(value)
    except YamlRefused as e:
        if e.where:  # not YAML at all (`--set name=a: b`): the text as given
            parsed = value
        else:  # YAML, but refused (an alias bomb, too deep): refused here as in a file
            raise SuiteError(file, "--set", f"{key}: {e}") from None
    set_path(raw, key, parsed, file)


def set_path(raw: dict, key: str, value: Any, file: str) -> None:
    """Set `value` at the dotted `key` of the raw mapping (list items by index), making mappings on the way."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SuiteError(file, key, f"no list item {short(part)} (the list has {len(node)})")
            idx: Any = int(part)
        elif isinstance(node, dict):
            idx = part
        else:
            raise SuiteError(file, key, f"{'.'.join(parts[:i])} is not a mapping")
        if last:
            node[idx] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(idx), (dict, list)):
                node[idx] = {}
            node = node[idx]


def suite_from_dict(raw: dict, file: str = "<suite>") -> Suite:
    if "strategies" not in raw:
        raise SuiteError(file, "strategies", "is required")
    if "name" not in raw:
        raise SuiteError(file, "name", "is required")
    raw = dict(raw)
    specs = raw.pop("strategies")
    if not isinstance(specs, list):
        raise SuiteError(file, "strategies", f"must be a list, got {typename(specs)}")
    strategies = tuple(_strategy(item, f"strategies[{i}]", file) for i, item in enumerate(specs))
    suite = build(Suite, raw, "", file, strategies=strategies)
    suite = dataclasses.replace(suite, origin=file)
    expand_sweep(suite)  # every variant must be a valid suite
    return suite


def expand_sweep(suite: Suite) -> list[Suite]:
    """The suite itself, or one variant per combination of `sweep` values (each with its own hash, and
    its `point`). A key path names any suite key, e.g. train.batch_size or data.lengths.sigma."""
    if not suite.sweep:
        return [suite]
    base = suite.to_dict()
    base.pop("sweep")
    keys = list(suite.sweep)
    variants = []
    for values in itertools.product(*(suite.sweep[k] for k in keys)):
        raw = copy.deepcopy(base)
        for key, value in zip(keys, values):
            set_path(raw, key, value, suite.origin)
        try:
            variant = suite_from_dict(raw, suite.origin)
        except SuiteError as e:
            raise SuiteError(suite.origin, f"sweep.{e.path}", f"{e.message} (in the variant "
                                                             f"{dict(zip(keys, values))})") from None
        variants.append(dataclasses.replace(variant, point=dict(zip(keys, values))))
    return variants


def parse_strategy(item: Any, path: str = "strategy", file: str = "<strategy>") -> StrategySpec:
    """A strategy as a suite's `strategies:` entry gives it (a preset name, `{preset: {options}}`, or a composed
    mapping with a `name:`), validated: SuiteError otherwise."""
    return _strategy(item, path, file)


def _strategy(item: Any, path: str, file: str) -> StrategySpec:
    """`mask`, `{truncate: {max_len: 64}}`, or `{name: x, batching: .., padding: .., readout: ..}`."""
    if isinstance(item, str):
        preset, params = item, {}
    elif isinstance(item, dict) and len(item) == 1 and next(iter(item)) in PRESETS:
        preset, params = next(iter(item.items()))
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise SuiteError(file, f"{path}.{preset}", f"must be a mapping of options, got {typename(params)}")
        path = f"{path}.{preset}"
    elif isinstance(item, dict):
        if "name" not in item:
            raise SuiteError(file, path, f"a composed strategy needs a `name:`; presets are {names(PRESETS)}")
        return build(StrategySpec, item, path, file)
    else:
        raise SuiteError(file, path, f"must be a strategy name or a mapping, got {typename(item)}")
    if preset not in PRESETS:
        raise SuiteError(file, path, f"unknown strategy {short(preset)}{suggest(preset, PRESETS)}; "
                                     f"valid: {names(PRESETS)}")
    return build(StrategySpec, {"name": preset, **PRESETS[preset], **params}, path, file)
