"""How a Keras strategy's number is made: `run_keras(suite, spec, seed)` -> `RunRecord`, in a fresh interpreter
whose KERAS_BACKEND is the strategy's (run/keras_worker.py starts it). No file I/O.

The same run as `train.run_one`, with Keras's recipe in place of lstmbench's loop: the seed's data, the seeded
PyTorch model (the init checksum every strategy of the seed shares) and the PyTorch strategy's own plan of
batches; the model's weights copied into its Keras twin (keras_twin.py: Embedding(mask_zero=True), layers.LSTM,
Dense); the twin's loss and gradients on the run's check batch against the float64 per-sequence reference; the
LSTM path Keras chose (cuDNN, or its generic loop); untimed warm-up on batches set aside, then the copied weights
and a fresh optimizer put back; every step timed by the host clock (`train_on_batch`, the batch's collation
measured apart), evaluations between segments off the clock; the steady state; accuracy through Keras's own
masked path and, with the trained weights copied back into PyTorch, exactly per sequence; the row.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..data import Splits, length_histogram, length_percentiles, make_data
from ..errors import RunFailed
from ..strategies import Strategy, exact_strategy, note_for, plan_ranks
from ..suite import StrategySpec, Suite
from .evaluation import accuracy_by_length, evaluate
from .keras_twin import keras_twin, loss_and_gradients, state_dict_of, torch_gradients
from .loop import WINDOWS, window_rates
from .machine import MachineWatch
from .model import LSTMClassifier, Precision, model_for, weights_checksum
from .probes import peak_memory_bytes, reset_peak_memory, rss_bytes
from .record import RunRecord, collect_env, identity
from .setup import check_batch
from .timing import cold_warm
from .train import WARMUP_SEED, accuracy_curves, target_fields
from .user_model import parameter_count
from .verify import (
    PLAIN,
    TOLERANCES,
    Claim,
    References,
    RunCheck,
    _checkable,
    _float64,
    claim_of,
    judge,
    pieces,
    reference,
    rel_errors,
    rounding_floors,
)

Progress = Callable[[int, int], None]

# the LSTM path Keras took, by backend, when its backend.lstm declined (NotImplementedError): its generic RNN
KERAS_LOOPS = {"tensorflow": "keras-while-loop", "torch": "keras-python-loop", "jax": "keras-scan"}
ADAM_EPSILON = 1e-8  # PyTorch's Adam default (Keras's is 1e-7): the same optimizer as the PyTorch strategies


@dataclass(frozen=True)
class KerasRun:
    """What the phases share: the configuration, the data, the seeded PyTorch model, the plan and the twin."""
    suite: Suite
    spec: StrategySpec
    seed: int
    strategy: Strategy
    splits: Splits
    model: LSTMClassifier  # the seeded PyTorch model: its checksum, and the exact evaluation's architecture
    checksum: str
    twin: Any  # the compiled keras.Model
    initial: list[Any]  # the twin's weights as copied (get_weights), put back after warm-up
    optimizer_initial: list[Any]  # the built optimizer's variables before any step
    twin_checksum: str
    plan: list[np.ndarray]
    per_epoch: int
    kernel: str
    baseline_rss: int

    @property
    def train(self) -> Any:
        return self.splits.train


def run_keras(suite: Suite, spec: StrategySpec, seed: int, progress: Progress | None = None,
              data: Splits | None = None) -> RunRecord:
    """One Keras run on the CPU: the Keras backend is the one this interpreter imported."""
    # the seed's data and model, the plan of batches, the twin with the model's weights, the path Keras takes
    run = prepare(suite, spec, seed, data)
    # the twin's loss and gradients on the run's check batch against each sequence alone, in float64
    check = check_twin(run)
    # untimed steps on batches set aside for it; then the copied weights and a fresh optimizer go back
    warm_times, warm_steps = warm_up(run)
    # the timed steps, in segments between evaluations (off the clock), until the target where the suite says so
    timed = train_timed(run, progress)
    # steady state: each shape's first occurrence at its steady time, what new shapes cost apart
    keys = [run.strategy.shape(run.train, idx) for idx in warm_steps + timed.plan]
    cw = cold_warm(warm_times, timed.step_times, keys, [b * t for b, t in keys])
    train_time = timed.raw_time - cw.timed_extra()
    windows = window_rates(timed.step_tokens, cw.timed_steady, WINDOWS)
    # off the clock: accuracy through Keras's masked path (per example, by length) and exactly, in PyTorch
    return record(run, check, warm_times, timed, cw, train_time, windows)


def prepare(suite: Suite, spec: StrategySpec, seed: int, data: Splits | None) -> KerasRun:
    """The seed's data, the seeded model and its checksum, the PyTorch strategy's plan, the compiled twin."""
    import keras

    if suite.threads:
        torch.set_num_threads(suite.threads)
    threads(suite.threads or torch.get_num_threads())
    reset_peak_memory(torch.device("cpu"))
    baseline_rss = rss_bytes()
    strategy = Strategy(spec)
    splits = data if data is not None else make_data(suite.data, seed, suite.origin)
    refuse_unmaskable(splits)
    model = model_for(suite.model, splits.train, seed, suite.origin)
    checksum = weights_checksum(model)
    keras.utils.set_random_seed(seed)  # nothing random is drawn (no dropout), but a backend's own state is fixed
    twin = keras_twin(model)
    twin.compile(optimizer=keras.optimizers.Adam(learning_rate=suite.train.lr, epsilon=ADAM_EPSILON),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    twin.optimizer.build(twin.trainable_variables)
    steps = plan_ranks(strategy, splits.train, suite.train.batch_size, suite.train.epochs, seed, 1)
    plan = [step[0] for step in steps]
    per_epoch = len(plan) // suite.train.epochs
    costliest = max(plan, key=lambda idx: int(np.prod(strategy.shape(splits.train, idx))))
    kernel = probe_kernel(twin, strategy.collate(splits.train, costliest))
    initial = twin.get_weights()
    return KerasRun(suite, spec, seed, strategy, splits, model, checksum, twin, initial,
                    [np.array(keras.ops.convert_to_numpy(v)) for v in twin.optimizer.variables],
                    arrays_checksum(initial), plan, per_epoch, kernel, baseline_rss)


def threads(n: int) -> None:
    """TensorFlow's threads as PyTorch's eager loop uses them: `n` threads within an op, one op at a time. Its
    defaults (every core within an op, and every core again running ops side by side) have the run's threads
    queue for each other on a small machine: 8-10% of their time on 2 cores, which reads as a busy machine."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)


# Keras's own words (keras/src/backend/tensorflow/rnn.py), which it raises only on a GPU, in cuDNN's assertion
UNMASKABLE = ("You are passing a RNN mask that does not correspond to right-padded sequences, while using cuDNN, "
              "which is not supported. With cuDNN, RNN masks can only be used for right-padding, e.g. "
              "`[[True, True, False, False]]` would be a valid mask, but any mask that isn't just contiguous "
              "`True`'s on the left and contiguous `False`'s on the right would be invalid.")


def refuse_unmaskable(splits: Splits) -> None:
    """Embedding(mask_zero=True) masks every token 0: a sequence that is empty (a fully masked row) or holds a
    0 inside its length (not right-padded) would be computed differently from lstmbench's strategies on a CPU,
    and refused by Keras on a GPU. The run is refused in Keras's words, naming the first such sequence."""
    for name, data in (("training", splits.train), ("held-out", splits.eval)):
        inside = np.arange(data.padded.shape[1])[None, :] < data.lengths[:, None]
        bad = np.flatnonzero((data.lengths == 0) | ((data.padded == 0) & inside).any(axis=1))
        if len(bad):
            i = int(bad[0])
            what = "is empty (a fully masked row)" if data.lengths[i] == 0 else "holds token 0 inside its length"
            raise RunFailed("error", f"{name} sequence {i} {what}: {UNMASKABLE}")


def probe_kernel(twin: Any, batch: Any) -> str:
    """The LSTM path Keras takes for a masked batch: its backend's fused lstm (cuDNN) where that accepts the
    call, else the generic RNN loop (keras/src/layers/rnn/lstm.py: backend.lstm raises NotImplementedError)."""
    import keras
    from keras.src import backend

    fused, taken = backend.lstm, []

    def watched(*args: Any, **kwargs: Any) -> Any:
        out = fused(*args, **kwargs)
        taken.append(True)
        return out

    backend.lstm = watched
    try:
        twin(batch.tokens.numpy(), training=True)
    finally:
        backend.lstm = fused
    return "keras-cudnn" if taken else KERAS_LOOPS[keras.backend.backend()]


def check_twin(run: KerasRun) -> RunCheck:
    """The twin's mean loss and gradients on the run's check batch (the longest sequence and its batch-mates)
    against the float64 reference of each sequence alone (as truncated, for a truncating strategy: its claim),
    through the seeded PyTorch weights it was copied from, as `verify.judge` decides for every strategy; a
    gradient that nearly cancels is judged against float32's own rounding of it (verify.rounding_floors)."""
    idx = check_batch(run.plan, run.train.lengths)
    batch = run.strategy.collate(run.train, idx)
    loss, grads = loss_and_gradients(run.twin, batch.tokens.numpy(), batch.labels.numpy())
    got = (loss, torch_gradients(run.model, run.twin, grads))
    note = note_for(run.spec, run.suite)
    claim = claim_of(run.spec, run.suite.model.bidirectional, run.train.tagged) if note else PLAIN
    refs, tolerance = References(_float64(run.model)), TOLERANCES["float32"]
    float32 = _checkable(copy.deepcopy(run.model))

    def errors(claimed: Claim) -> tuple[float, float]:
        alone = pieces(claimed, run.train, idx, batch)
        # the same reference in float32: its distance from float64 is what float32's rounding does to each gradient
        return rel_errors(got, refs(alone), rounding_floors(reference(float32, alone), refs(alone), tolerance))

    own = errors(claim)
    plain = own if claim == PLAIN else errors(PLAIN)
    return RunCheck(judge(note, own, plain, tolerance), *own, tolerance, "float32")


def warm_up(run: KerasRun) -> tuple[list[float], list[np.ndarray]]:
    """Untimed steps on the warm-up plan (as the PyTorch strategies'), then the copied weights and the optimizer's
    initial state put back, checked by checksum."""
    import keras

    steps = [s[0] for s in plan_ranks(run.strategy, run.train, run.suite.train.batch_size, 1,
                                      run.seed + WARMUP_SEED, 1)[:run.suite.train.warmup_steps]]
    times = []
    for idx in steps:
        t0 = time.perf_counter()
        batch = run.strategy.collate(run.train, idx)
        run.twin.train_on_batch(batch.tokens.numpy(), batch.labels.numpy())
        times.append(time.perf_counter() - t0)
        run.twin.reset_metrics()
    run.twin.set_weights(run.initial)
    for variable, value in zip(run.twin.optimizer.variables, run.optimizer_initial):
        variable.assign(value)
    if arrays_checksum(run.twin.get_weights()) != run.twin_checksum or keras.ops.convert_to_numpy(
            run.twin.optimizer.iterations) != 0:
        raise RunFailed("error", "warm-up left the Keras model's weights changed; the run would not be comparable")
    return times, steps


@dataclass(frozen=True)
class Timed:
    plan: list[np.ndarray]  # the batches trained (fewer than planned when the run stopped at its target)
    step_times: list[float]
    segments: list[tuple[int, float]]  # (steps done at the segment's end, its time)
    raw_time: float
    data_times: list[float]
    losses: list[float]
    step_tokens: list[int]
    real_tokens: int
    padded_tokens: int
    evals: list[tuple[int, float]]
    eval_times: list[float]
    peak: int  # the process's peak RSS over the timed steps
    train_mem: int  # that peak over the resident memory before the first step: what training grew
    machine: dict[str, Any]


def train_timed(run: KerasRun, progress: Progress | None) -> Timed:
    """The timed loop: each step collates its batch and calls train_on_batch (its loss read back as a number,
    which ends the step on the host); segments between periodic evaluations, as the PyTorch loop's."""
    suite, train, plan = run.suite, run.train, run.plan
    until = suite.train.until_target
    every = suite.train.eval_every or (max(1, run.per_epoch // 8) if until else 0)
    target, cap = suite.train.target_accuracy, suite.train.max_time_s
    ends = list(range(every, len(plan), every)) if every else []
    step_times, data_times, losses, step_tokens, evals, eval_times, peaks, segments = [], [], [], [], [], [], [], []
    real = padded = 0
    resident = rss_bytes()
    reset_peak_memory(torch.device("cpu"))
    watch = MachineWatch.start("cpu")
    for start, end in zip([0] + ends, ends + [len(plan)]):
        for step in range(start, end):
            t0 = time.perf_counter()
            batch = run.strategy.collate(train, plan[step])
            t1 = time.perf_counter()
            loss = run.twin.train_on_batch(batch.tokens.numpy(), batch.labels.numpy())
            step_times.append(time.perf_counter() - t0)
            data_times.append(t1 - t0)
            run.twin.reset_metrics()  # the next step's loss is its own, not a running mean
            if not np.isfinite(loss):
                raise RunFailed("diverged", f"the training loss became {loss} at step {step}")
            losses.append(float(loss))
            step_tokens.append(batch.real_tokens)
            real += batch.real_tokens
            padded += batch.padded_tokens
            if progress:
                progress(step + 1, len(plan))
        segments.append((end, float(sum(step_times[start:end]))))
        peaks.append(peak_memory_bytes(torch.device("cpu")))  # before evaluating: the evaluation's is not training's
        if end < len(plan):
            t_eval = time.perf_counter()
            accuracy = keras_accuracy(run.twin, run.strategy, run.splits.eval, suite.eval_batch_size)[0]
            evals.append((end, accuracy))
            eval_times.append(time.perf_counter() - t_eval)
            reset_peak_memory(torch.device("cpu"))
            if until and (accuracy >= target or cap and sum(step_times) >= cap):
                plan = plan[:end]
                break
    machine = watch.stop()
    return Timed(plan, step_times, segments, float(sum(step_times)), data_times, losses, step_tokens, real, padded,
                 evals, eval_times, max(peaks), max(0, max(peaks) - resident), machine)


def keras_accuracy(twin: Any, strategy: Strategy, data: Any, batch_size: int) -> tuple[float, np.ndarray]:
    """Accuracy through Keras's own path (each batch padded to its longest, masked) and each sequence's hit, in
    the data's order."""
    import keras

    order = strategy.eval_order(data)
    hits = np.empty(len(data), dtype=np.int64)
    for i, batch in zip(range(0, len(order), batch_size), strategy.eval_batches(data, batch_size)):
        logits = np.asarray(keras.ops.convert_to_numpy(twin.predict_on_batch(batch.tokens.numpy())))
        hits[order[i:i + batch_size]] = logits.argmax(axis=1) == batch.labels.numpy()
    return float(hits.mean()) if len(hits) else 0.0, hits


def record(run: KerasRun, check: RunCheck, warm_times: list[float], timed: Timed, cw: Any, train_time: float,
           windows: list[float]) -> RunRecord:
    """The row: final accuracy through Keras's path and exactly (the trained weights in the PyTorch model, each
    sequence run alone through the fused masked path), the curve, the time to target, the checks."""
    suite, spec, train, target = run.suite, run.spec, run.train, run.suite.train.target_accuracy
    t_eval = time.perf_counter()
    accuracy, hits = keras_accuracy(run.twin, run.strategy, run.splits.eval, suite.eval_batch_size)
    evals, eval_times = list(timed.evals), list(timed.eval_times)
    if not evals or evals[-1][0] != len(timed.plan):
        evals.append((len(timed.plan), accuracy))
        eval_times.append(time.perf_counter() - t_eval)
    trained = model_for(suite.model, train, run.seed, suite.origin)
    trained.load_state_dict(state_dict_of(trained, run.twin))
    accuracy_exact, loss_exact = evaluate(trained, exact_strategy(), run.splits.eval, suite.eval_batch_size,
                                          torch.device("cpu"), Precision("cpu", "none"))
    eval_time = time.perf_counter() - t_eval
    curves = accuracy_curves(timed.segments, evals, eval_times, cw)
    to_target = target_fields(curves, target, timed.step_tokens, windows)
    quantiles = np.quantile(cw.timed_steady, [0.1, 0.5, 0.9])
    return RunRecord(
        **identity(suite, spec, run.seed, "cpu", note_for(spec, suite)), status="ok",
        steps=len(timed.plan), warmup_steps=len(warm_times), warmup_time_s=float(sum(warm_times)),
        shape_warmup_s=cw.shape_warmup_s, train_time_cold_s=timed.raw_time + cw.warmup_extra,
        distinct_shapes=len({run.strategy.shape(train, idx) for idx in timed.plan}),
        lstm_kernel=run.kernel, lstm_dtype="float32", loss_scaled=False,
        real_tokens=timed.real_tokens, padded_tokens=timed.padded_tokens,
        pad_fraction=1 - timed.real_tokens / timed.padded_tokens,
        train_time_s=train_time, data_time_s=float(sum(timed.data_times)),
        data_time_fraction=float(sum(timed.data_times)) / train_time, data_wait_s=float(sum(timed.data_times)),
        samples_per_s=sum(len(idx) for idx in timed.plan) / train_time, tokens_per_s=timed.real_tokens / train_time,
        step_time_median_s=float(quantiles[1]), step_time_p10_s=float(quantiles[0]),
        step_time_p90_s=float(quantiles[2]),
        peak_mem_bytes=timed.peak, train_mem_bytes=timed.train_mem, baseline_rss_bytes=run.baseline_rss,
        eval_accuracy=accuracy, eval_accuracy_exact=accuracy_exact, eval_loss_exact=loss_exact,
        curve=curves[0], **to_target,
        reached_target=None if not target else to_target["time_to_target_s"] is not None,
        accuracy_by_length=accuracy_by_length(run.splits.eval, hits),
        train_length_histogram=length_histogram(train.lengths),
        train_length_percentiles=length_percentiles(train.lengths),
        final_loss=float(np.mean(timed.losses[-run.per_epoch:])), init_checksum=run.checksum,
        model_params=parameter_count(run.model), data_checksum=run.splits.checksum(),
        threads=torch.get_num_threads(), eval_time_s=eval_time, eval_periodic_time_s=float(sum(timed.eval_times)),
        window_tokens_per_s=windows,
        verified=check.verdict, verify_loss_rel_error=check.loss_rel_error,
        verify_grad_rel_error=check.grad_rel_error, verify_tolerance=check.tolerance,
        verify_precision=check.precision,
        env={**collect_env("cpu", torch.get_num_threads()), **keras_env(run), **timed.machine},
    )


def keras_env(run: KerasRun) -> dict[str, Any]:
    """What the Keras row ran with: Keras's and its backend's versions, whether Keras compiled the step with
    XLA, and the checksum of the weights as the twin held them."""
    import keras

    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend]
    tf_threads = {}
    if backend == "tensorflow":
        import tensorflow as tf

        tf_threads = {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                      "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
    return {**tf_threads, "keras": keras.__version__, "keras_backend": backend,
            "keras_backend_version": __import__(module).__version__,
            "keras_jit_compile": bool(run.twin.jit_compile), "keras_init_checksum": run.twin_checksum}


def arrays_checksum(arrays: list[Any]) -> str:
    """sha256 prefix of a list of arrays (values, dtypes and shapes), as weights_checksum is of a state dict."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
