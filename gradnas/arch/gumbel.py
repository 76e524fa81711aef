"""Gumbel-softmax samples of α as the op weights (docs/methods.md §14): SNAS (soft) and GDAS (hard, one op per edge).

Every forward draws one sample per cell type, shared by the cells of that type: with Gumbel noise g,
p = softmax((log_softmax(α) + g) / τ). SNAS weighs every op by p. GDAS takes the one-hot h of argmax p and weighs
by h − p.detach() + p: h in value, p's gradient (straight-through); each edge then computes only its sampled op.
τ lives in a device tensor that the ``temperature`` hook fills at every epoch start.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..options import Option, declare
from .base import CellWeights, shared_by_type
from .softmax import SampledAlpha

if TYPE_CHECKING:
    from ..config import SearchConfig


def gumbel_softmax(alpha: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """softmax((log_softmax(α) + g) / τ) over the last dim, g = −log E with E ~ Exp(1) drawn on α's device."""
    gumbels = -torch.empty_like(alpha).exponential_().log()
    return ((alpha.log_softmax(-1) + gumbels) / tau).softmax(-1)


class GumbelSoftmax(SampledAlpha):
    """SNAS: α per cell type as DARTS's, every op weighted by a soft Gumbel-softmax sample at temperature τ."""

    def __init__(self, cell_types, op_names, in_degrees, init_scale: float = 1e-3, tau: float = 1.0):
        super().__init__(cell_types, op_names, in_degrees, init_scale)
        self.register_buffer("tau", torch.tensor(float(tau)), persistent=False)  # the hook sets it every epoch

    @classmethod
    def options_from_config(cls, config: "SearchConfig") -> dict[str, Any]:
        return {"tau": config.tau_max}

    def set_temperature(self, tau: float) -> None:
        self.tau.fill_(tau)

    def op_weights(self) -> list[torch.Tensor]:
        return shared_by_type(self.cell_types, {t: gumbel_softmax(a, self.tau) for t, a in self.alpha.items()})


class HardGumbel(GumbelSoftmax):
    """GDAS: the hard one-hot sample with the straight-through gradient; each edge computes its sampled op only.

    Which op that is must be known on the host to skip the others, so every forward reads the sampled indices of
    all cell types back in one copy (``CellWeights.sampled``): a data-dependent choice of kernels cannot stay on
    the device. Hence no batched executor and no captured iteration (``one_op_per_edge``)."""

    one_op_per_edge = True

    def cell_weights(self) -> list[CellWeights]:
        types = list(self.alpha)
        probs = torch.stack([gumbel_softmax(self.alpha[t], self.tau) for t in types])  # (types, E, |O|)
        index = probs.argmax(-1, keepdim=True)
        hard = torch.zeros_like(probs).scatter_(-1, index, 1.0) - probs.detach() + probs
        sampled = dict(zip(types, index.squeeze(-1).tolist()))  # the one read-back of the forward
        weights = dict(zip(types, hard.unbind(0)))
        return [CellWeights(weights[t], sampled=sampled[t]) for t in self.cell_types]


declare(
    "architecture",
    Option("tau_max", float, 10.0, 'GDAS/SNAS: Gumbel-softmax temperature at the first epoch (GDAS 10, SNAS 1)'),
    Option("tau_min", float, 0.1, 'GDAS/SNAS: temperature at the last epoch, reached linearly (GDAS 0.1, SNAS 0.33)'),
)
