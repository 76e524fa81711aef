"""Per-epoch method hooks: the part of a method that acts between epochs (e.g. progressive shrinking).

A hook sees the running search through a :class:`SearchContext`, the few things a method acting between
epochs needs, not the whole Searcher: what it may rely on is written down here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch

from ..options import Option, declare
from ..registry import Registry

if TYPE_CHECKING:
    from ..config import SearchConfig
    from ..data import ImageDataset, StreamData
    from ..genotypes import Genotype
    from .model import SearchModel

HOOKS: Registry = Registry("search hook")


@dataclass(frozen=True)
class SearchContext:
    """What a hook may use of a running search."""
    config: "SearchConfig"
    model: "SearchModel"                  # supernet and architecture
    out: Path                             # the run directory (files a hook writes go here)
    device: torch.device
    memory_format: torch.memory_format    # the layout the supernet's inputs take
    data: "ImageDataset | StreamData"     # the search data (mean, std, images when in memory)
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None  # None: single-level search on all data
    reduce: Callable[[list[torch.Tensor]], Any] | None  # averages tensors over data-parallel ranks; None: one process


class Hook:
    """Override what the method needs; ``on_epoch_end`` may return fields for the epoch's log record."""

    def __init__(self, context: SearchContext):
        self.config = context.config

    def on_epoch_start(self, context: SearchContext, epoch: int) -> None:
        pass

    def on_epoch_end(self, context: SearchContext, epoch: int) -> dict[str, Any] | None:
        return None

    def genotype(self, context: SearchContext) -> "Genotype | None":
        """A genotype that replaces the selection rule's (None: use the rule)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def build_hooks(context: SearchContext) -> list[Hook]:
    return [HOOKS[name](context) for name in context.config.hooks]


declare(
    "hooks",
    Option("hooks", list[str], [], 'per-epoch method hooks: {choices}', choices=HOOKS.names),
)
