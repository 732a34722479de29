"""lstmbench: how should I batch my variable-length sequences so my LSTM trains fastest?"""
__version__ = "0.1.0"

from .records import RunRecord  # noqa: E402
from .suite import Suite, load_suite  # noqa: E402

__all__ = ["RunRecord", "Suite", "load_suite", "__version__"]
