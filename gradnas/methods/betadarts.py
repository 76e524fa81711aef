"""β-DARTS (docs/methods.md §11): DARTS with the Beta-Decay regulariser on α (Ye et al., CVPR 2022).

The architecture objective becomes L_val + λ_e · mean over edges of logsumexp_o α[edge, o] (the smoothmax of each
edge's α, averaged over the edges of every cell type) [paper][code]. λ grows linearly with the epoch,
λ_e = 50 · e / T (0 at the first epoch, 49.5 at the last of T = 100) [code], T the run's epochs [interp]; the
hook below sets it at every epoch start, so a resumed run picks up the same λ from the epoch it continues with.
"""
from __future__ import annotations

from typing import Any

import torch

from ..arch import ARCHITECTURES, SoftmaxAlpha
from . import PRESETS
from ..errors import GradnasError
from ..search.hooks import HOOKS, Hook, SearchContext

MAX_WEIGHT = 50.0  # λ at the end of the ramp: the authors' `weights = 0 + 50*epoch/100`, 100 = their epochs [code]


def beta_decay_loss(alphas: list[torch.Tensor]) -> torch.Tensor:
    """mean over all edges (rows) of logsumexp over the ops: the authors' ``mlc_loss`` [code]."""
    return torch.cat([a.flatten(0, -2) for a in alphas]).logsumexp(-1).mean()


def decay_weight(epoch: int, epochs: int) -> float:
    """λ_e = 50·e/T, a linear ramp from 0: the authors' 50·e/100 with their T = 100 [code]; here T is the run's
    epochs, so a shorter search still ends near 50 (docs/methods.md §11 [interp])."""
    return MAX_WEIGHT * epoch / epochs


@ARCHITECTURES.register("beta-decay")
class BetaDecaySoftmax(SoftmaxAlpha):
    """DARTS's softmax α whose :meth:`regularizer` is λ times the Beta-Decay loss on the raw α of every cell type;
    λ (``decay_weight``) is set per epoch by the ``beta-decay`` hook (0 until then). λ lives in a device tensor,
    filled in place, so one captured graph serves every epoch; at λ = 0 the term adds exact zeros."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("lam", torch.zeros(()), persistent=False)  # the hook sets it at every epoch start

    @property
    def decay_weight(self) -> float:
        return self.lam.item()

    @decay_weight.setter
    def decay_weight(self, value: float) -> None:
        self.lam.fill_(value)

    def regularizer(self) -> torch.Tensor:
        return self.lam * beta_decay_loss(list(self.alpha.values()))


@HOOKS.register("beta-decay")
class BetaDecaySchedule(Hook):
    """Sets λ_e on the architecture at the start of every epoch and logs it with the loss it weights."""

    def __init__(self, context: SearchContext):
        super().__init__(context)
        if not isinstance(context.model.arch, BetaDecaySoftmax):
            raise GradnasError(f"the beta-decay hook needs --arch beta-decay, not {context.config.arch!r}")

    def on_epoch_start(self, context: SearchContext, epoch: int) -> None:
        context.model.arch.decay_weight = decay_weight(epoch, self.config.epochs)

    def on_epoch_end(self, context: SearchContext, epoch: int) -> dict[str, Any]:
        arch = context.model.arch
        with torch.no_grad():
            loss = beta_decay_loss(list(arch.alpha.values())).item()  # once per epoch, outside the steps
        return {"beta_decay": {"weight": arch.decay_weight, "loss": loss}}


#: The authors' NB201 search (nasbench201/train_search.py) [code]: 100 epochs, plain momentum SGD with wd 3e-4
#: (not the benchmark's Nesterov and 5e-4), first order; batch 64, lr 0.025 → 0.001, clip 5, α Adam 3e-4,
#: betas (0.5, 0.999), wd 1e-3 and the 50/50 split are DARTS's defaults already. In the DARTS space their
#: script's defaults are DARTS's (50 epochs) [code].
SEARCH = {"nb201": {"epochs": 100, "nesterov": False, "weight_decay": 3e-4}, "darts": {}}


@PRESETS.register("beta-darts")
def beta_darts(space: str) -> dict:
    return {**SEARCH.get(space, {}), "arch": "beta-decay", "hooks": ["beta-decay"], "order": 1}
