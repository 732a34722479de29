"""Results: rows as readers take them (checked, completed), the results folder (the only code touching it),
the regression gate, the exports."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "action_export": ("to_action_benchmark",),
    "compare": ("compare_results",),
    "export": ("to_pytest_benchmark",),
    "rows": ("code", "hardware", "harness_overhead", "software"),
    "storage": ("load_rows",),
}
MODULES = ("storage",)  # files offered whole, as namespaces
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC, MODULES)
