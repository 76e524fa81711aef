"""Per-epoch method hooks: the part of a method that acts between epochs (e.g. progressive shrinking)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:
    from ..config import SearchConfig
    from ..genotypes import Genotype
    from .loop import Searcher

HOOKS: Registry = Registry("search hook")


class Hook:
    """Override what the method needs; ``on_epoch_end`` may return fields for the epoch's log record."""

    def __init__(self, config: "SearchConfig", searcher: "Searcher"):
        self.config = config

    def on_epoch_start(self, searcher: "Searcher", epoch: int) -> None:
        pass

    def on_epoch_end(self, searcher: "Searcher", epoch: int) -> dict[str, Any] | None:
        return None

    def genotype(self, searcher: "Searcher") -> "Genotype | None":
        """A genotype that replaces the selection rule's (None: use the rule)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def build_hooks(config: "SearchConfig", searcher: "Searcher") -> list[Hook]:
    return [HOOKS[name](config, searcher) for name in config.hooks]
