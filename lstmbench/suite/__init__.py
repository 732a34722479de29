"""The suite stage: a YAML file -> a validated, frozen Suite (`from lstmbench.suite import load_suite`)."""
from .load import Suite, load_suite

__all__ = ["Suite", "load_suite"]
