"""The data: a seeded synthetic task or a real source -> split, vocabulary -> Dataset; each seed's data made
once for all its runs."""
from ..faces import lazy

# what other stages may use, by the file that defines it (imported when first asked for: see faces.py)
PUBLIC = {
    "cache": ("SeedData", "load"),
    "make": (
        "Dataset", "IGNORE", "PAD", "Splits", "check_data", "from_pairs", "length_histogram", "length_percentiles",
        "make_data",
    ),
}
__getattr__, __dir__, __all__ = lazy(__name__, PUBLIC)
