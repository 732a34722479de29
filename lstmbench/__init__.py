"""lstmbench: how should I batch my variable-length sequences so my LSTM trains fastest?"""
from .measure import RunRecord
from .suite import Suite, load_suite
from .version import __version__

__all__ = ["RunRecord", "Suite", "load_suite", "__version__"]
