"""The report: tables and sections, paired accuracy, the recommendation, plots and the HTML page."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "recommendation": ("python_snippet", "recommend"),
}
MODULES = ("html", "summary",)  # files offered whole, as namespaces
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC, MODULES)
