"""Equivalence: does a strategy's batched loss and gradient equal what it claims to compute, sequence by sequence?

Each strategy is held to a per-sequence reference of its own claim (`Claim`): an exact strategy to each
sequence run alone and unpadded; truncation to each sequence cut to max_len, alone; the readout `last` to each
sequence alone but padded to its batch's width and read at the last padded step (a masked readout, in either
direction, is exact: the model runs the reverse direction within each sequence's length). Twice:
`verify_suite` in float64 on the generic kernel (the arithmetic), `check_run` on a run's own device,
precision and kernel (what is timed), against a float64 reference on the CPU. `SuiteChecks` does both for a
suite (`lstmbench verify`) with each float64 reference computed once (`References`).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import IGNORE, Dataset, make_data
from ..errors import LstmbenchError
from ..strategies import Batch, Strategy, note_for, plan_epochs
from ..suite import StrategySpec, Suite
from .model import LSTMClassifier, loss_of, model_for
from .probes import KernelProbe, cpu_bf16_lstm, resolve_device
from .user_model import UserModel, is_bidirectional, without_dropout

EQUIVALENT, AS_DESIGNED, MISMATCH = "equivalent", "differs as designed", "MISMATCH"
# Relative errors (loss; gradients: see rel_errors) against the float64 per-sequence reference, measured with
# the tiny test suite and its 2-layer, bidirectional, tag and long (lengths to 200, hidden 32) variants on a CPU
# (torch 2.13), exact strategies against broken ones (readout one step early; truncation one token short):
TOLERANCE = 1e-7  # float64: exact strategies land near 1e-15, a broken one above 1e-3 (loss) and 2e-1 (gradients)
TOLERANCES = {
    "float64": TOLERANCE,
    "float32": 1e-4,  # exact strategies (oneDNN or generic) land below 6e-6, a broken one above 2e-1
    "bf16": 1e-1,  # exact strategies land below 6e-2 (generic kernel: oneDNN has no bf16 LSTM on that CPU), a
    #                broken one above 2e-1: bf16's 8-bit mantissa leaves a factor of 2 on each side, no more
    "fp16": 3e-2,  # exact strategies land below 5e-3 (generic kernel, loss-scaled), a broken one above 2e-1
    "tf32": 3e-2,  # cuDNN's float32 LSTM on Ampere+ (cudnn.allow_tf32, on by default): fp16's 10-bit mantissa,
    #                accumulated in float32; not measured (no GPU here), fp16's tolerance
}
GRAD_FLOOR = 1e-6  # naive padding over 50+ steps leaves the embedding a gradient 1e-12 of the head's, which fp16
# flushes to zero even loss-scaled (relative error 1.0 on the embedding): far below what moves an optimizer
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_SCALE = 2.0**16  # fp16: GradScaler's initial scale (unscaled, fp16 gradients underflow), halved on overflow


class TimedPathUnavailable(LstmbenchError):
    """The suite's timed path cannot run on this machine (no GPU, no bf16 LSTM on this CPU)."""


# ----------------------------------------------------------------------------- what a strategy claims
@dataclass(frozen=True)
class Claim:
    """What a strategy computes for each sequence of a batch, as a recipe for running that sequence alone."""
    cut: int = 0  # keep only this many leading steps (truncate); 0 = all of them
    padded: bool = False  # run padded with PAD to the batch's width, not unpadded
    read_padded_end: bool = False  # classify: the output at the last padded step, not at the true end
    pad_label: int = IGNORE  # tag: the padded steps' label (0 where the loss scores them, as naive training does)
    rows: bool = False  # padding reshape: the batch's own rows, each alone (the ideal's scrambled rows)


PLAIN = Claim()  # each sequence alone, whole, unpadded: what an exact strategy must equal


def claim_of(spec: StrategySpec, bidirectional: bool = False, tag: bool = False) -> Claim:
    """The claim, from the spec alone (never from the strategy's code, which is what is checked). Only `last`
    runs padded: a masked readout claims exactness, bidirectional or not."""
    if spec.is_reference:
        return Claim(rows=True)
    last = spec.readout == "last"
    return Claim(cut=spec.max_len if spec.padding == "truncate" else 0,
                 padded=last,
                 read_padded_end=last and not tag, pad_label=0 if last and tag else IGNORE)


Piece = tuple[np.ndarray, int, np.ndarray]  # one sequence as the claim runs it: tokens, read end, labels


def pieces(claim: Claim, data: Dataset, idx: np.ndarray, batch: Batch) -> list[Piece]:
    """Each sequence of batch `idx` as `claim` runs it alone (`batch`: the collated batch, for its width)."""
    if claim.rows:
        rows, labels = batch.tokens.numpy(), batch.labels.numpy()
        return [(row, len(row), labels[r] if data.tagged else labels[r:r + 1]) for r, row in enumerate(rows)]
    width = batch.tokens.shape[1]
    out = []
    for i in map(int, idx):
        seq = data.sequence(i)
        k = min(len(seq), claim.cut) if claim.cut else len(seq)
        w = max(width, k) if claim.padded else k  # max: a batch cut too short must not hide it
        tokens = np.zeros((w, *seq.shape[1:]), dtype=seq.dtype)  # PAD is 0 (features: zeros)
        tokens[:k] = seq[:k]
        labels = np.full(w, claim.pad_label, dtype=np.int64) if data.tagged else data.labels[[i]]
        if data.tagged:
            labels[:k] = data.padded_tags[i, :k]
        out.append((tokens, w if claim.read_padded_end else k, labels))
    return out


# ----------------------------------------------------------------------------- losses and gradients
Result = tuple[float, list[torch.Tensor]]  # a mean loss and its gradients (float64, CPU)


def reference(model: LSTMClassifier | UserModel, run: list[Piece]) -> Result:
    """The mean loss over the pieces, each run alone through the model, and its gradients (`_logits`: how).
    Pieces of the same width and read end are stacked, unpadded and unpacked: rows of an LSTM never mix."""
    groups: dict[tuple[int, int], list[Piece]] = {}
    for piece in run:
        groups.setdefault((len(piece[0]), piece[1]), []).append(piece)
    total, count = 0.0, 0
    for (width, end), group in groups.items():
        logits = _logits(model, np.stack([tokens for tokens, _, _ in group]), width, end)
        y = torch.from_numpy(np.stack([labels for _, _, labels in group]))
        total = total + loss_of(logits, y if model.tag else y[:, 0], "sum")
        count += int((y != IGNORE).sum())
    loss = total / count
    return float(loss.detach()), [g.to(torch.float64) for g in grads_of(model, loss)]


def _logits(model: LSTMClassifier | UserModel, tokens: np.ndarray, width: int, end: int) -> torch.Tensor:
    """Stacked pieces' logits. lstmbench's model: through its own layers (embedding, LSTM, head), the readout
    taken by hand from the LSTM's output, so it does not depend on the forward's readout code. The suite's own
    model (a UserModel): through its forward, as a batch with no padding (each piece's length its width)."""
    x = torch.from_numpy(tokens)
    if isinstance(model, UserModel):
        steps = width if model.tag else end  # a classifier reads its piece's end, which is its width
        return model(x[:, :steps], torch.full((len(x),), steps, dtype=torch.int64), "last")
    hidden = model.lstm.hidden_size
    out = model.lstm(model.embed(x.to(model.embed.weight.dtype) if model.features else x))[0]
    # forward direction at `end`, reverse direction (if any) at step 0, where it ends
    return model.head(out if model.tag else torch.cat([out[:, end - 1, :hidden], out[:, 0, hidden:]], 1))


class References:
    """`reference` for one float64 model, each computed once: the generic-kernel check and the timed-path check
    hold a suite's strategies to the same references on the same batches, and strategies of one batching share
    their plain ones. Keyed by the pieces' contents (their order included: it orders the float64 sums)."""

    def __init__(self, model: LSTMClassifier):
        self.model = model
        self._done: dict[bytes, Result] = {}

    def __call__(self, run: list[Piece]) -> Result:
        key = _digest(run)
        if key not in self._done:
            self._done[key] = reference(self.model, run)
        return self._done[key]


def _digest(run: list[Piece]) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    for tokens, end, labels in run:
        for a in (tokens, labels):
            h.update(f"{a.dtype.str}{a.shape}:".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(f"{end};".encode())
    return h.digest()


def batched(net: LSTMClassifier, strategy: Strategy, batch: Batch, device: torch.device, amp: str = "none",
            scaled: bool = False) -> Result:
    """The strategy's mean loss and gradients on the batch, computed as training computes them: on `device`,
    under autocast when `amp` says so, the loss scaled where training scales it (fp16, or `scaled`: an LSTM
    that autocast runs in fp16 under bf16)."""
    batch = batch.to(device)
    with _autocast(device, amp):
        loss = loss_of(net(batch.tokens, batch.lengths, strategy.readout), batch.labels)
    scale = LOSS_SCALE if amp == "fp16" or scaled else 1.0
    grads = grads_of(net, loss * scale, retain=scale > 1)
    while scale > 1 and not all(bool(torch.isfinite(g).all()) for g in grads):
        scale /= 2
        grads = grads_of(net, loss * scale, retain=scale > 1)
    return float(loss.detach()), [g.detach().to("cpu", torch.float64) / scale for g in grads]


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:  # as train.Precision
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp]) if amp in AMP_DTYPES else contextlib.nullcontext()


def grads_of(model: LSTMClassifier, loss: torch.Tensor, retain: bool = False) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True, retain_graph=retain), params)]


def rel_errors(got: Result, ref: Result, floors: list[float] | None = None) -> tuple[float, float]:
    """(loss, gradients): |l - l_ref| / |l_ref|, and the max over parameters of max|g - g_ref| / max|g_ref|
    (max|g_ref| floored at GRAD_FLOOR x the largest gradient entry of the model, and at `floors`, per parameter,
    where given: rounding_floors)."""
    (loss, grads), (ref_loss, ref_grads) = got, ref
    loss_err = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
    floor = max(GRAD_FLOOR * max(float(r.abs().max()) for r in ref_grads), 1e-30)
    floors = floors or [0.0] * len(ref_grads)
    grad_err = max(float((g - r).abs().max()) / max(float(r.abs().max()), floor, f)
                   for g, r, f in zip(grads, ref_grads, floors))
    return loss_err, grad_err


# An error within this many times float32's own rounding of the same sums (the float32 reference's distance from
# the float64 one, per parameter) is rounding, not a departure: Keras's float32 gradients lie 1-2.5x from it
ROUNDING_FACTOR = 10.0


def rounding_floors(ref32: Result, ref: Result, tolerance: float) -> list[float]:
    """Per parameter, the gradient magnitude below which its error is judged against float32's rounding instead:
    a gradient that nearly cancels (a classifier's bias gradient at initialisation, the mean of p - y over a
    balanced batch: 1.7e-4 from terms of 0.5) keeps the sum's rounding error (2e-8) while its own size shrinks,
    and a relative error would read that rounding as a departure. A broken computation departs by a share of the
    gradient itself (above 0.2), far above these floors."""
    return [ROUNDING_FACTOR * float((q - r).abs().max()) / tolerance for q, r in zip(ref32[1], ref[1])]


@dataclass(frozen=True)
class Equivalence:
    loss_batched: float
    loss_reference: float
    loss_rel_error: float
    grad_rel_error: float  # max over parameters of max|g - g_ref| / max|g_ref|

    def holds(self, tolerance: float) -> bool:
        return self.loss_rel_error <= tolerance and self.grad_rel_error <= tolerance


def check_batch(model: LSTMClassifier, strategy: Strategy, data: Dataset, idx: np.ndarray,
                claim: Claim = PLAIN) -> Equivalence:
    """Compare the strategy's mean loss and gradients on batch `idx` with the per-sequence reference of
    `claim` (default: each sequence run alone, unpadded and untruncated), on the same model."""
    batch = strategy.collate(data, idx)
    got = batched(model, strategy, batch, torch.device("cpu"))
    ref = reference(model, pieces(claim, data, idx, batch))
    return Equivalence(got[0], ref[0], *rel_errors(got, ref))


# ----------------------------------------------------------------------------- verdicts
def judge(note: str, own: tuple[float, float], plain: tuple[float, float], tolerance: float) -> str:
    """EQUIVALENT: matches its own reference, which the plain one equals on these batches; AS_DESIGNED: has a
    note, matches its own reference and differs from the plain one; MISMATCH: does not match its own."""
    if max(own) > tolerance:
        return MISMATCH
    return AS_DESIGNED if note and max(plain) > tolerance else EQUIVALENT


@dataclass(frozen=True)
class Outcome:
    own: tuple[float, float]  # (loss, gradients): largest relative errors against the strategy's own reference
    plain: tuple[float, float]  # ... against each sequence alone, unpadded (how far the design departs)
    verdict: str


def outcome(net: LSTMClassifier, refs: References, strategy: Strategy, data: Dataset,
            batches: list[np.ndarray], device: torch.device, amp: str, note: str, tolerance: float,
            scaled: bool = False) -> Outcome:
    """Check `strategy` on `batches`: `net` computes the batches (on `device`, under `amp`), `refs` (on the
    CPU) the references. A strategy with no note is held to the plain reference, one with a note to its claim."""
    claim = claim_of(strategy.spec, is_bidirectional(refs.model), data.tagged) if note else PLAIN
    own, plain = [], []
    for idx in batches:
        batch = strategy.collate(data, idx)
        got = batched(net, strategy, batch, device, amp, scaled)
        plain.append(rel_errors(got, refs(pieces(PLAIN, data, idx, batch))))
        own.append(rel_errors(got, refs(pieces(claim, data, idx, batch))) if claim != PLAIN else plain[-1])
    worst = lambda errors: (max(e[0] for e in errors), max(e[1] for e in errors))  # noqa: E731
    return Outcome(worst(own), worst(plain), judge(note, worst(own), worst(plain), tolerance))


def _float64(model: LSTMClassifier) -> LSTMClassifier:
    """A float64 copy on the CPU, checkable: the model of the references."""
    return _checkable(copy.deepcopy(model).to("cpu", torch.float64))


def _checkable(model: LSTMClassifier) -> LSTMClassifier:
    """A copy in training mode (cuDNN's backward refuses eval mode) without dropout (the reference and the batch
    must see the same function)."""
    return without_dropout(model).train()


def checked_batches(plan: list[np.ndarray], lengths: np.ndarray, batches: int) -> list[np.ndarray]:
    """The first `batches` batches of a plan, the last one replaced by the batch holding the longest sequence
    (where padding, truncation and the readout matter most)."""
    longest = next(idx for idx in plan if lengths.argmax() in idx)
    return plan[:max(batches - 1, 0)] + [longest]


# ----------------------------------------------------------------------------- on the timed path
@dataclass(frozen=True)
class RunCheck:
    verdict: str  # EQUIVALENT | AS_DESIGNED | MISMATCH
    loss_rel_error: float  # largest over the checked batches, against the strategy's own reference
    grad_rel_error: float
    tolerance: float  # the tolerance used (fitted to the precision)
    precision: str  # float32 | tf32 (cuDNN on Ampere+) | bf16 | fp16 | float64


def precision_of(model: torch.nn.Module, device: torch.device, amp: str, lstm_dtype: str = "") -> str:
    """The arithmetic a training step of `model` runs in on `device` under train.amp `amp`: fp16 where the
    LSTM kernel ran in float16 under bf16 (`lstm_dtype`, the kernel probe's: cuDNN under autocast)."""
    if amp == "bf16" and lstm_dtype == "float16":
        return "fp16"
    if amp in AMP_DTYPES:
        return amp
    if next(model.parameters()).dtype == torch.float64:
        return "float64"
    tf32 = (device.type == "cuda" and torch.backends.cudnn.allow_tf32
            and torch.cuda.get_device_capability(device)[0] >= 8)  # cuDNN's LSTM takes TF32 on Ampere and later
    return "tf32" if tf32 else "float32"


def check_run(model: LSTMClassifier, strategy: Strategy, data: Dataset, batches: list[np.ndarray],
              device: torch.device, amp: str, note: str, refs: References | None = None) -> RunCheck:
    """The run's own model on its own device, precision and kernel (autocast as training does, oneDNN or cuDNN)
    against a float64 per-sequence reference on the CPU, on `batches` (`refs`: those of this model's float64
    copy, made here if not given). Works on copies: the model's weights and gradients are left as they were."""
    precision = precision_of(model, device, amp, _probe(model, strategy, data, batches[-1], device, amp).dtype)
    tolerance = TOLERANCES[precision]
    net = _checkable(copy.deepcopy(model))
    refs = refs if refs is not None else References(_float64(model))
    result = outcome(net, refs, strategy, data, batches, device, amp, note, tolerance,
                     scaled=precision == "fp16" and amp != "fp16")
    return RunCheck(result.verdict, *result.own, tolerance, precision)


@dataclass(frozen=True)
class TimedVerdict:
    strategy: str
    kernel: str  # the LSTM implementation the longest checked batch ran
    check: RunCheck


def timed_device(suite: Suite) -> torch.device:
    """The device (and amp) the suite's runs are timed on, or TimedPathUnavailable saying why not here."""
    if suite.device.startswith("cuda") and not torch.cuda.is_available():
        raise TimedPathUnavailable("the suite runs on cuda and torch sees no CUDA GPU")
    device = resolve_device(suite.device)
    if suite.train.amp == "fp16" and device.type != "cuda":
        raise TimedPathUnavailable(f"train.amp fp16 needs a CUDA device, and this suite runs on {device.type}")
    if suite.train.amp == "bf16" and device.type == "cpu" and not cpu_bf16_lstm():
        raise TimedPathUnavailable("train.amp bf16 on this CPU: oneDNN has no bf16 LSTM here")
    return device


def verify_timed(suite: Suite, batches: int = 3) -> list[TimedVerdict]:
    """`check_run` for every strategy of `suite`, on the batches `verify_suite` checks, with the first seed's
    float32 model on the suite's device under its train.amp."""
    return SuiteChecks(suite, batches).timed()


def _suite_model(suite: Suite) -> tuple[Dataset, LSTMClassifier]:
    """The first seed's training data and seeded model, as its run builds them."""
    data = make_data(suite.data, suite.seeds[0], suite.origin).train
    return data, model_for(suite.model, data, suite.seeds[0], suite.origin)


def _suite_checks(suite: Suite, data: Dataset, batches: int) -> list[tuple[Strategy, list[np.ndarray], str]]:
    """Each PyTorch strategy of the suite, the batches of its first-seed plan to check, its computation note. A
    Keras strategy is checked in its own run, in its backend's fresh interpreter (keras_train.check_twin)."""
    plans = [(Strategy(spec), plan_epochs(Strategy(spec), data.lengths, suite.train.batch_size, 1, suite.seeds[0]))
             for spec in suite.strategies if spec.framework == "torch"]
    return [(s, checked_batches(plan, data.lengths, batches), note_for(s.spec, suite)) for s, plan in plans]


def _kernel(model: LSTMClassifier, strategy: Strategy, data: Dataset, idx: np.ndarray, device: torch.device,
            amp: str) -> str:
    """The LSTM implementation one forward pass of this batch runs (as setup.probe_kernel, without importing
    train, which imports this module)."""
    return _probe(model, strategy, data, idx, device, amp).kernel


def _probe(model: LSTMClassifier, strategy: Strategy, data: Dataset, idx: np.ndarray, device: torch.device,
           amp: str) -> KernelProbe:
    """What one forward pass of this batch runs: the LSTM's kernel and its dtype."""
    batch = strategy.collate(data, idx).to(device)
    with KernelProbe() as probe, _autocast(device, amp), torch.no_grad():
        model(batch.tokens, batch.lengths, strategy.readout)
    return probe


def timed_table(rows: list[TimedVerdict]) -> list[dict[str, Any]]:
    """One row a strategy, as `lstmbench verify` shows the timed path."""
    return [{"strategy": r.strategy, "kernel": r.kernel, "precision": r.check.precision,
             "max rel. error, loss": f"{r.check.loss_rel_error:.1e}",
             "max rel. error, gradients": f"{r.check.grad_rel_error:.1e}",
             "tolerance": f"{r.check.tolerance:.0e}", "verdict": r.check.verdict} for r in rows]


# ----------------------------------------------------------------------------- float64, generic kernel
@dataclass(frozen=True)
class Verdict:
    strategy: str
    batches: int
    loss_rel_error: float  # the largest over the checked batches, against the strategy's own reference
    grad_rel_error: float
    note: str  # how the strategy changes the computation ('' = it claims to be exact)
    verdict: str  # equivalent | differs as designed | MISMATCH
    departure: float = 0.0  # the largest relative error (loss or gradients) against each sequence alone, unpadded
    first: str = ""  # a MISMATCH: the first sequence whose output departs, and by how much (first_difference)


def first_difference(model: torch.nn.Module, strategy: Strategy, data: Dataset, batches: list[np.ndarray],
                     tolerance: float = TOLERANCE) -> str:
    """Where an exact-claiming strategy departs, for a person to look at: the first sequence (in data order) of
    the checked batches whose output in the batch differs from its output alone, and by how much: 'sequence 37
    (length 5): its logits differ by 0.31 at most'. '' if every sequence's output agrees (the gradients did not)."""
    for idx in batches:
        batch = strategy.collate(data, idx)
        with torch.no_grad():
            batched = model(batch.tokens, batch.lengths, strategy.readout)
        rows = {bytes(np.ascontiguousarray(batch.tokens[r, :int(n)].numpy())): r
                for r, n in enumerate(batch.lengths.tolist())}
        for i in sorted(map(int, idx)):
            seq = data.sequence(i)
            row = rows.get(bytes(np.ascontiguousarray(seq.astype(batch.tokens.numpy().dtype))))
            if row is None:
                continue
            with torch.no_grad():
                alone = model(batch.tokens[row:row + 1, :len(seq)], torch.tensor([len(seq)]), strategy.readout)
            got = batched[row, :len(seq)] if batched.dim() == 3 else batched[row]
            gap = float((got - alone[0]).abs().max())
            if gap > tolerance * max(1.0, float(alone.abs().max())):
                return f"sequence {i} (length {len(seq)}): its logits differ by {gap:.2g} at most"
    return ""


def tally(verdicts: list[str]) -> str:
    """'3 equivalent, 2 differ as designed, 0 mismatch'."""
    return ", ".join(f"{sum(v == k for v in verdicts)} {word}" for k, word in
                     ((EQUIVALENT, "equivalent"), (AS_DESIGNED, "differ as designed"), (MISMATCH, "mismatch")))


def mismatch(names: list[str], where: str) -> str:
    """'1 strategy does not match per-sequence processing: mask' (`where`: ' on the timed path (...)')."""
    noun = "strategy does" if len(names) == 1 else "strategies do"
    return f"{len(names)} {noun} not match per-sequence processing{where}: {', '.join(names)}"


def verdict_table(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """One row a strategy, as `lstmbench verify` shows it."""
    return [{"strategy": v.strategy, "batches": v.batches, "max rel. error, loss": f"{v.loss_rel_error:.1e}",
             "max rel. error, gradients": f"{v.grad_rel_error:.1e}", "vs. plain per-sequence": f"{v.departure:.1e}",
             "verdict": v.verdict + (f": {v.note}" if v.verdict == AS_DESIGNED else "")} for v in verdicts]


def verify_suite(suite: Suite, batches: int = 3, tolerance: float = TOLERANCE) -> list[Verdict]:
    """Check every strategy of `suite` on real batches of its data (first seed), in float64 on the generic
    kernel, against its own per-sequence reference: the first `batches` batches of the strategy's own plan,
    the last one replaced by the batch holding the longest sequence."""
    return SuiteChecks(suite, batches).generic(tolerance)


class SuiteChecks:
    """Both checks of a suite (`generic`: `verify_suite`; `timed`: `verify_timed`) on what they share, built
    once: the first seed's data and model, each strategy's checked batches, and the float64 per-sequence
    references, which both checks hold their batches to (on gpu.yaml, 12 distinct of the 48 they ask for)."""

    def __init__(self, suite: Suite, batches: int = 3):
        self.suite = suite
        self.data, self.model = _suite_model(suite)  # float32, as its run builds it
        self.checks = _suite_checks(suite, self.data, batches)
        self.refs = References(_float64(self.model))

    def generic(self, tolerance: float = TOLERANCE) -> list[Verdict]:
        """In float64 on the generic kernel: the references' model computes the batches too."""
        net, verdicts = self.refs.model, []
        for strategy, chosen, note in self.checks:
            result = outcome(net, self.refs, strategy, self.data, chosen, torch.device("cpu"), "none", note, tolerance)
            first = first_difference(net, strategy, self.data, chosen) if result.verdict == MISMATCH and not note \
                else ""
            verdicts.append(Verdict(strategy.name, len(chosen), *result.own, note, result.verdict, max(result.plain),
                                    first))
        return verdicts

    def timed(self) -> list[TimedVerdict]:
        """On the suite's device under its train.amp, the float32 model's kernel (TimedPathUnavailable if not
        here)."""
        device, amp = timed_device(self.suite), self.suite.train.amp
        model = copy.deepcopy(self.model).to(device)
        rows = []
        for strategy, chosen, note in self.checks:
            check = check_run(model, strategy, self.data, chosen, device, amp, note, self.refs)
            kernel = _kernel(model, strategy, self.data, chosen[-1], device, amp)
            rows.append(TimedVerdict(strategy.name, kernel, check))
        return rows
