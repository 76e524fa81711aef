"""The search loop and the architecture updates it drives."""
from .loop import SearchResult, Searcher, build_search_model, search
from . import shrinking  # noqa: F401  (registers the progressive-shrinking hook)

__all__ = ["SearchResult", "Searcher", "build_search_model", "search"]
