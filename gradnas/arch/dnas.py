"""DNAS's decoupled per-cell weights (docs/methods.md §6): ψ[k,i,j] = σ(α[i,j]) · sm(β[k,:])_i · σ(γ[k,j]).

Every cell k gets its own (E, |O|) weights, yet only E·|O| + L·E + L·|O| numbers are learned instead of
L·E·|O|: α (edge × op) is shared by all cells, β (cell × edge) says which connections each cell uses and
γ (cell × op) which ops it prefers. The weights are computed for all cells at once and handed out per cell as
op weights σ(α)·σ(γ) and connection scales sm(β): the connection scale multiplies the edge's whole output, so
inside the partial-channel edge it weighs the channels that bypass the ops too, as PC-DARTS's edge
normalisation does (docs/methods.md §6); their product, what the rule ranks, is ψ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import GradnasError
from ..options import Option, declare
from .base import Architecture, CellWeights

if TYPE_CHECKING:
    from ..config import SearchConfig

BETA_SOFTMAX = ("layer", "node")


def zero_one_loss(z: torch.Tensor) -> torch.Tensor:
    """Fair-DARTS's zero-one loss −mean((σ(z) − ½)²): 0 at z = 0 (where its gradient vanishes), −¼ as |z| → ∞;
    minimising it pushes every sigmoid weight towards 0 or 1."""
    return -(z.sigmoid() - 0.5).square().mean()


class DecoupledPsi(Architecture):
    """α ∈ R^{E×|O|} shared, β ∈ R^{L×E}, γ ∈ R^{L×|O|}; one genotype per cell (``per_cell``).

    ``beta_softmax="layer"`` normalises β over all E connections of a cell (docs/methods.md §6); ``"node"``
    normalises it over each node's incoming edges instead (the [interp] option of §6). ``zero_one_weight``
    scales the zero-one loss on σ(α) and σ(γ) added to the architecture objective (10 in DNAS; 0: none).
    """

    per_cell = True
    weighs_edges = True  # β scales each connection: PC-DARTS's edge normalisation would do it twice

    def __init__(self, cell_types, op_names, in_degrees, init_scale: float = 1e-3, zero_one_weight: float = 0.0,
                 beta_softmax: str = "layer"):
        super().__init__(cell_types, op_names, in_degrees)
        if beta_softmax not in BETA_SOFTMAX:
            raise GradnasError(f"beta_softmax must be one of {', '.join(BETA_SOFTMAX)}, got {beta_softmax!r}")
        L, E, O = len(self.cell_types), self.num_edges, len(self.op_names)
        # Init 1e-3·N(0,1) for all three, as DARTS initialises α (docs/methods.md §6 [interp]).
        self.alpha = nn.Parameter(init_scale * torch.randn(E, O))
        self.beta = nn.Parameter(init_scale * torch.randn(L, E))
        self.gamma = nn.Parameter(init_scale * torch.randn(L, O))
        self.zero_one_weight = zero_one_weight
        self.beta_softmax = beta_softmax

    @classmethod
    def options_from_config(cls, config: "SearchConfig") -> dict[str, Any]:
        return {"zero_one_weight": config.zero_one_weight, "beta_softmax": config.beta_softmax}

    def edge_weights(self) -> torch.Tensor:
        """sm(β) as an (L, E) tensor, normalised per cell or per node."""
        if self.beta_softmax == "layer":
            return self.beta.softmax(-1)
        return torch.cat([b.softmax(-1) for b in self.beta.split(self.in_degrees, dim=1)], dim=1)

    def psi(self) -> torch.Tensor:
        """ψ for every cell at once, shape (L, E, |O|), entries in (0, 1)."""
        return self.alpha.sigmoid()[None] * self.edge_weights()[:, :, None] * self.gamma.sigmoid()[:, None, :]

    def op_weights(self) -> list[torch.Tensor]:
        """σ(α[i, j])·σ(γ[k, j]) per cell; the connection factor sm(β[k])_i comes as the edge scale."""
        return list((self.alpha.sigmoid()[None] * self.gamma.sigmoid()[:, None, :]).unbind(0))

    def forward(self) -> list[CellWeights]:
        cells = super().forward()
        for cell, scale in zip(cells, self.edge_weights().unbind(0)):
            cell.edges = scale
        return cells

    def regularizer(self) -> torch.Tensor | None:
        if self.zero_one_weight == 0:
            return None
        # One mean over the N = E·|O| + L·|O| sigmoid entries of α and γ (docs/methods.md §6 [interp]).
        return self.zero_one_weight * zero_one_loss(torch.cat([self.alpha.flatten(), self.gamma.flatten()]))

    @torch.no_grad()
    def summary(self) -> dict[str, Any]:
        """The per-cell ψ matrices plus scalars TensorBoard plots: σ(α) range, entropy of sm(β) and σ(γ) per cell."""
        sa, b, sg = self.alpha.sigmoid(), self.edge_weights(), self.gamma.sigmoid()
        entropy = -(b * b.log()).sum(-1)
        cells = [f"cell{k}" for k in range(len(self.cell_types))]
        return {**super().summary(), "stats": {
            "sigmoid_alpha": {"mean": sa.mean().item(), "min": sa.min().item(), "max": sa.max().item()},
            "beta_entropy": dict(zip(cells, entropy.tolist())),
            "sigmoid_gamma": {c: dict(zip(self.op_names, row)) for c, row in zip(cells, sg.tolist())},
        }}


declare(
    "architecture",
    Option("zero_one_weight", float, 0.0, 'DNAS: weight of the zero-one loss on σ(α), σ(γ) (DNAS 10; 0: off)'),
    Option("beta_softmax", str, 'layer',
           "DNAS: softmax of β over all edges of a cell (layer) or over each node's edges (node)"),
)
