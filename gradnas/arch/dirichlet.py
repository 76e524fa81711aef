"""DrNAS's Dirichlet op weights (docs/methods.md §15): a reparameterised Dirichlet sample per edge every forward.

The concentration of each edge is ELU(β) + 1 (positive, and 1 + β for β > 0) [code: ``process_step_vector``];
each forward draws one sample per cell type with ``rsample``, so the loss's gradient reaches β through the sample
(pathwise, implicit reparameterisation). The optional regulariser is their ``_get_kl_reg``: the sum over edges of
KL(Dir(ELU(β) + 1) ‖ Dir(1)), times ``dirichlet_kl``; their default regularisation is the architecture
optimiser's weight decay on β alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

from ..options import Option, declare
from .base import shared_by_type
from .softmax import SampledAlpha

if TYPE_CHECKING:
    from ..config import SearchConfig


def concentration(beta: torch.Tensor) -> torch.Tensor:
    return F.elu(beta) + 1


class DirichletAlpha(SampledAlpha):
    """β per cell type (``alpha``, as DARTS's α, initialised alike); op weights ~ Dir(ELU(β) + 1) per edge."""

    def __init__(self, cell_types, op_names, in_degrees, init_scale: float = 1e-3, kl_weight: float = 0.0):
        super().__init__(cell_types, op_names, in_degrees, init_scale)
        self.kl_weight = kl_weight

    @classmethod
    def options_from_config(cls, config: "SearchConfig") -> dict[str, Any]:
        return {"kl_weight": config.dirichlet_kl}

    def dirichlet(self, beta: torch.Tensor) -> Dirichlet:
        # no argument validation: it would read the concentration back to the host in every step
        return Dirichlet(concentration(beta), validate_args=False)

    def op_weights(self) -> list[torch.Tensor]:
        return shared_by_type(self.cell_types, {t: self.dirichlet(b).rsample() for t, b in self.alpha.items()})

    def regularizer(self) -> torch.Tensor | None:
        if self.kl_weight == 0:
            return None
        beta = torch.cat(list(self.alpha.values()))
        prior = Dirichlet(torch.ones_like(beta), validate_args=False)
        return self.kl_weight * kl_divergence(self.dirichlet(beta), prior).sum()


declare(
    "architecture",
    Option("dirichlet_kl", float, 0.0,
           "DrNAS: weight of the KL divergence from Dir(ELU(β)+1) to the Dir(1) prior "
           "(their --reg_type kl: 1e-3; 0: off)"),
)
