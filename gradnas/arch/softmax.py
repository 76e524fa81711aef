"""DARTS's continuous relaxation: α per cell type, softmax over the ops of each edge (docs/methods.md §1.1)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Architecture, shared_by_type


class SoftmaxAlpha(Architecture):
    """``set_alive`` (progressive shrinking, S-DARTS) masks removed ops to −∞ before the softmax, as the
    authors' ``get_masked_alpha`` does: the survivors' weights sum to 1 and removed α get no gradient. The
    masks are not part of the state dict; the shrinking hook restores them on resume."""

    def __init__(self, cell_types, op_names, in_degrees, init_scale: float = 1e-3):
        super().__init__(cell_types, op_names, in_degrees)
        self.alpha = nn.ParameterDict({
            t: nn.Parameter(init_scale * torch.randn(self.num_edges, len(op_names)))
            for t in dict.fromkeys(cell_types)})
        self.removed: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def set_alive(self, cell_type: str, alive: torch.Tensor) -> None:
        self.removed[cell_type] = ~alive.to(self.alpha[cell_type].device, torch.bool)

    def op_weights(self) -> list[torch.Tensor]:
        masked = {t: a if t not in self.removed else a.masked_fill(self.removed[t], float("-inf"))
                  for t, a in self.alpha.items()}
        return shared_by_type(self.cell_types, {t: a.softmax(-1) for t, a in masked.items()})


class PerCellSoftmax(Architecture):
    """A free α per cell, shape (L, E, |O|), softmax over the ops of each edge in each cell: the
    "PC-DARTS global" baseline of DNAS (docs/methods.md §6), L·E·|O| parameters; one genotype per cell."""

    per_cell = True

    def __init__(self, cell_types, op_names, in_degrees, init_scale: float = 1e-3):
        super().__init__(cell_types, op_names, in_degrees)
        self.alpha = nn.Parameter(init_scale * torch.randn(len(self.cell_types), self.num_edges, len(op_names)))

    def op_weights(self) -> list[torch.Tensor]:
        return list(self.alpha.softmax(-1).unbind(0))


class SampledAlpha(SoftmaxAlpha):
    """α per cell type whose op weights are a fresh random sample every forward (SNAS, GDAS, DrNAS), drawn once
    per cell type; the genotype, the log and the NB201 report follow softmax(α), as the authors' ``genotype()``."""

    draws = True

    @torch.no_grad()
    def distribution(self) -> list[torch.Tensor]:
        return SoftmaxAlpha.op_weights(self)

    @torch.no_grad()
    def selection_weights(self) -> list[torch.Tensor]:
        return [p if c.edges is None else p * c.edges[:, None] for p, c in zip(self.distribution(), self.forward())]
