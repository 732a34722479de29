"""Measuring one run: the model, the training loop and its clock, memory, evaluation, the equivalence
check, the machine around the run, and the record it makes."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "ddp": ("Group", "join_group", "leave_group", "torchrun_world"),
    "disturbance": ("Disturbance", "SETTLE_MAX_S", "judge", "settle", "split_disturbed"),
    "keras_train": ("run_keras",),
    "machine": ("MachineWatch", "busy_warning", "device_name", "look_at_others"),
    "model": (
        "LSTMClassifier", "Precision", "both_directions", "loss_of", "model_for", "training_bytes",
        "within_length_reversal",
    ),
    "probes": (
        "Clock", "cpu_bf16_lstm", "memory_bytes", "out_of_memory", "refuse_out_of_memory", "reset_peak_memory",
        "resolve_device",
    ),
    "record": ("RunRecord", "SCHEMA_VERSION", "STATUSES", "collect_env", "identity"),
    "timing": ("StepTimer",),
    "loop": ("train_step",),
    "setup": ("check_model", "probe_kernel"),
    "train": ("run_one", "step_memory_bytes"),
    "user_model": ("ModelSpec", "UserModel", "parameter_count", "resolve_model"),
    "verify": (
        "EQUIVALENT", "MISMATCH", "SuiteChecks", "TOLERANCE", "TimedPathUnavailable", "grads_of", "mismatch", "tally",
        "timed_device", "timed_table", "verdict_table",
    ),
}
MODULES = ("model",)  # files offered whole, as namespaces
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC, MODULES)
