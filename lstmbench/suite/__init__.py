"""The suite: a YAML file -> a validated, frozen Suite; its typed sections, the strategy presets, reading
what users hand us (`from lstmbench.suite import load_suite`)."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "config": (
        "FACTORY", "DataConfig", "Lengths", "LoaderConfig", "MAX_PADDED_CELLS", "MAX_SEQUENCE", "ModelConfig",
        "StrategySpec", "TrainConfig",
    ),
    "files": (
        "MAX_DATA_BYTES", "MAX_LENGTHS_BYTES", "MAX_RESULTS_BYTES", "MAX_SOURCE_BYTES", "MAX_TABLE_BYTES",
        "Unreadable", "is_regular", "kind", "read_bytes", "read_text", "safe_name", "size",
    ),
    "load": ("Suite", "apply_override", "expand_sweep", "load_suite", "parse_strategy", "suite_from_dict"),
    "presets": ("CHOICE_HELP", "DESCRIPTIONS", "IDEAL", "PRESETS"),
    "schema": ("MAX_SEED", "names", "short", "typename"),
}
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC)
