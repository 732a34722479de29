"""lstmbench: how should I batch my variable-length sequences so my LSTM trains fastest?"""
from .measure.record import RunRecord
from .suite.load import Suite, load_suite
from .version import __version__

__all__ = ["RunRecord", "Suite", "load_suite", "__version__"]
