"""The architecture parameterisation: what the arch optimiser learns and how it becomes op weights.

An :class:`Architecture` returns, for every cell of the supernet, a :class:`CellWeights` (one forward
computes them all, so a softmax shared by all cells of a type runs once). Op weights come from the
parameterisation itself (softmax α, DNAS's decoupled ψ, IS-DARTS's masks); optional parts add a
per-edge scale (PC-DARTS edge normalisation) or per-group scales (G-DARTS-A attention). Everything
stays a tensor, so a compiled supernet does not recompile when the weights change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from ..config import SearchConfig


@dataclass
class CellWeights:
    ops: torch.Tensor                    # (E, |O|) weight of each candidate op on each edge
    edges: torch.Tensor | None = None    # (E,) scale of each edge's output
    groups: torch.Tensor | None = None   # (E, M) scale of each channel group of each edge's output
    sampled: list[int] | None = None     # (E,) on the host: the one op each edge computes (GDAS); None: all


class CellModifier(nn.Module):
    """An optional architecture part that adds a field to every cell's weights."""

    field: str
    #: The architecture optimiser's weight decay for this part's parameters; None: the optimiser's own.
    weight_decay: float | None = None

    def forward(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def summary(self) -> dict[str, object]:
        """Entries for the per-epoch log beside the selection weights (none by default)."""
        return {}


class Architecture(nn.Module):
    """Base class: subclasses implement :meth:`op_weights`.

    ``cell_types`` names the type of each cell ("normal"/"reduce"); ``in_degrees`` the number of incoming
    edges of each intermediate node, in edge order.
    """

    #: True when every cell may end with its own genotype (derivation then returns one per cell).
    per_cell = False
    #: True when the parameterisation sets every edge's scale itself (no edge normalisation on top).
    weighs_edges = False
    #: True when each edge computes one sampled op, read back to the host every forward (GDAS): such a search
    #: runs edge by edge and is not captured.
    one_op_per_edge = False
    #: True when every forward draws random numbers (SNAS's and GDAS's samples).
    draws = False

    def __init__(self, cell_types: list[str], op_names: tuple[str, ...], in_degrees: tuple[int, ...]):
        super().__init__()
        self.cell_types = list(cell_types)
        self.op_names = tuple(op_names)
        self.in_degrees = tuple(in_degrees)
        self.num_edges = sum(in_degrees)
        self.modifiers = nn.ModuleList()

    @classmethod
    def options_from_config(cls, config: "SearchConfig") -> dict[str, Any]:
        """The constructor options this parameterisation reads from a search configuration."""
        return {}

    def add(self, modifier: CellModifier) -> "Architecture":
        self.modifiers.append(modifier)
        return self

    def op_weights(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: the parameters under the optimiser's own weight decay, then those of each
        modifier that sets its own."""
        special = [m for m in self.modifiers if m.weight_decay is not None]
        ids = {id(p) for m in special for p in m.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in ids]}]
        groups += [{"params": list(m.parameters()), "weight_decay": m.weight_decay} for m in special]
        return [g for g in groups if g["params"]]

    def cell_weights(self) -> list[CellWeights]:
        """The cells' weights before any modifier: by default one op-weight matrix each."""
        return [CellWeights(w) for w in self.op_weights()]

    def forward(self) -> list[CellWeights]:
        cells = self.cell_weights()
        for modifier in self.modifiers:
            for cell, value in zip(cells, modifier()):
                setattr(cell, modifier.field, value)
        return cells

    @torch.no_grad()
    def distribution(self) -> list[torch.Tensor]:
        """Per cell, the (E, |O|) op weights the architecture stands for (a sampler's probabilities, not a sample)."""
        return [c.ops for c in self.forward()]

    @torch.no_grad()
    def selection_weights(self) -> list[torch.Tensor]:
        """Per cell, the (E, |O|) matrix a selection rule ranks: op weights times any edge scale."""
        return [c.ops if c.edges is None else c.ops * c.edges[:, None] for c in self.forward()]

    def regularizer(self) -> torch.Tensor | None:
        """An extra term for the architecture objective (DNAS's zero-one loss); none by default."""
        return None

    def summary(self) -> dict[str, list]:
        """Human-readable weights for the per-epoch log."""
        weights = self.selection_weights()
        seen: dict[str, list] = {}
        for kind, w in zip(self.cell_types, weights):
            key = kind if not self.per_cell else f"cell{len(seen)}"
            seen.setdefault(key, [[float(f"{v:.4g}") for v in row] for row in w.float().tolist()])  # 4 significant digits
        for modifier in self.modifiers:
            seen.update(modifier.summary())
        return seen


def shared_by_type(cell_types: list[str], per_type: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Hand each cell the tensor of its type (computed once per type)."""
    return [per_type[t] for t in cell_types]
