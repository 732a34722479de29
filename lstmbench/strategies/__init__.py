"""The strategies: batching x padding x readout as batch plans and collation; their distributed form;
the input pipeline; the length arithmetic of `lstmbench lengths`."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "lengths": ("DATA_SUFFIXES", "data_suite", "histogram", "padding_table"),
    "loader": ("batches", "row_fields"),
    "ranks": ("coverage_problems", "plan_ranks", "planned_wait_fraction", "rank_epoch_stream", "rank_epochs"),
    "strategy": (
        "Batch", "PACKED", "Strategy", "describe", "epoch_stream", "exact_strategy", "note_for", "plan_epochs",
    ),
}
MODULES = ("checks",)  # files offered whole, as namespaces
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC, MODULES)
