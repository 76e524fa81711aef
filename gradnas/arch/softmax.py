"""DARTS's continuous relaxation: α per cell type, softmax over the ops of each edge (METHODS.md §1.1)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Architecture, shared_by_type


class SoftmaxAlpha(Architecture):
    def __init__(self, cell_types, op_names, in_degrees, init_scale: float = 1e-3):
        super().__init__(cell_types, op_names, in_degrees)
        self.alpha = nn.ParameterDict({
            t: nn.Parameter(init_scale * torch.randn(self.num_edges, len(op_names)))
            for t in dict.fromkeys(cell_types)})

    def op_weights(self) -> list[torch.Tensor]:
        return shared_by_type(self.cell_types, {t: a.softmax(-1) for t, a in self.alpha.items()})
