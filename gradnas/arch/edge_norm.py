"""PC-DARTS edge normalisation: β per edge, softmaxed over the incoming edges of each node (docs/methods.md §3)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import CellModifier, shared_by_type


class EdgeNormalization(CellModifier):
    field = "edges"

    def __init__(self, cell_types: list[str], in_degrees: tuple[int, ...], init_scale: float = 1e-3):
        super().__init__()
        self.cell_types = list(cell_types)
        self.in_degrees = tuple(in_degrees)
        self.beta = nn.ParameterDict({
            t: nn.Parameter(init_scale * torch.randn(sum(in_degrees))) for t in dict.fromkeys(cell_types)})

    def normalise(self, beta: torch.Tensor) -> torch.Tensor:
        return torch.cat([b.softmax(0) for b in beta.split(self.in_degrees)])

    def forward(self) -> list[torch.Tensor]:
        return shared_by_type(self.cell_types, {t: self.normalise(b) for t, b in self.beta.items()})
