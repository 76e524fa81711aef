"""The search loop and the architecture updates it drives.

The loop (``search``, ``Searcher``, ...) is imported on first use: the configuration imports this package's
parts (update, hooks) for their option declarations, and the loop imports the configuration.
"""
from . import shrinking  # noqa: F401  (registers the progressive-shrinking hook)

__all__ = ["SearchResult", "Searcher", "build_search_model", "search"]


def __getattr__(name: str):
    if name in __all__:
        from . import loop
        return getattr(loop, name)
    raise AttributeError(f"module 'gradnas.search' has no attribute {name!r}")
