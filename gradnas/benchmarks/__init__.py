"""Tabular NAS benchmarks: look up the trained accuracy of a discrete architecture instead of training it."""
from .nb201 import NB201Entry, NB201Table, format_entry

__all__ = ["NB201Entry", "NB201Table", "format_entry"]
