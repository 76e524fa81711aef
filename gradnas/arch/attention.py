"""G-DARTS-A group attention (docs/methods.md §4): a learnable scale a[ℓ, e, m] per cell, edge and channel group.

Independent per cell and per edge [paper]; trained with α by the architecture optimiser on validation
batches, since it lives in the :class:`Architecture` module [interp]; no part in derivation [interp].
Without weight decay [interp]: the paper names no regulariser for a, and DARTS's decay of α (1e-3, toward a
uniform softmax) would pull every a, and so every edge's output, toward 0 instead.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..options import Option, declare
from .base import CellModifier


def default_attention_init(groups: int, spread: float = 0.3) -> torch.Tensor:
    """``a_m = 1 + spread·(2m − M − 1)/(M − 1)`` for m = 1..M: 0.7, 0.9, 1.1, 1.3 for M=4, 1 for M=1.

    The paper's initial values are distinct but lost; this evenly spaced set with mean 1 is
    docs/methods.md §4 [interp], ``spread`` configurable.
    """
    if groups == 1:
        return torch.ones(1)
    m = torch.arange(1, groups + 1, dtype=torch.float32)
    return 1 + spread * (2 * m - groups - 1) / (groups - 1)


class GroupAttention(CellModifier):
    """Fills ``CellWeights.groups`` with the (E, M) attention of each cell.

    ``sigmoid=True`` passes a through a logistic sigmoid, SE-style (an option; docs/methods.md §4 [interp]
    defaults to no activation).
    """

    field = "groups"
    weight_decay = 0.0

    def __init__(self, num_cells: int, num_edges: int, groups: int, spread: float = 0.3, sigmoid: bool = False):
        super().__init__()
        self.sigmoid = sigmoid
        self.a = nn.Parameter(default_attention_init(groups, spread).repeat(num_cells, num_edges, 1))

    def values(self) -> torch.Tensor:
        return self.a.sigmoid() if self.sigmoid else self.a

    def forward(self) -> list[torch.Tensor]:
        return list(self.values().unbind(0))

    @torch.no_grad()
    def summary(self) -> dict[str, object]:
        """Per cell, the mean attention of each group over the cell's edges; and the overall range."""
        a = self.values().float()
        return {"attention": {"mean_per_cell": [[round(v, 4) for v in row] for row in a.mean(1).tolist()],
                              "min": round(a.min().item(), 4), "max": round(a.max().item(), 4)}}


declare(
    "architecture",
    Option("group_attention", bool, False, 'G-DARTS-A: a learnt scale a[cell, edge, group], trained with α'),
    Option("attention_spread", float, 0.3, 'G-DARTS-A: initial attention evenly spaced in 1 ± spread'),
    Option("attention_sigmoid", bool, False, 'G-DARTS-A: pass the attention through an SE-style sigmoid'),
)
