"""The search loop and the architecture updates it drives."""
from .loop import SearchResult, Searcher, build_search_model, search

__all__ = ["SearchResult", "Searcher", "build_search_model", "search"]
