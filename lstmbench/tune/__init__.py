"""`lengths --tune`: a cost model of step time against batch shape, fitted on probes of this machine; the search;
what the command says about it."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "text": ("check_lines", "tune_lines"),
    "tuner": ("BUDGET_S", "check_options"),
}
MODULES = ("tuner",)  # files offered whole, as namespaces
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC, MODULES)
