"""GDAS and SNAS (docs/methods.md §14): Gumbel-softmax samples of α, with a temperature annealed over the search.

GDAS (Dong & Yang, CVPR 2019): hard one-hot samples, straight-through gradient, one op per edge computed, τ from 10
to 0.1 [code]. SNAS (Xie et al., ICLR 2019): soft samples, τ from 1 to 0.33 (ConfigurableOptimizer's SNAS part).
"""
from __future__ import annotations

from typing import Any

from ..arch import GumbelSoftmax
from ..errors import GradnasError
from ..search.hooks import HOOKS, Hook, SearchContext
from . import PRESETS


def temperature(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """τ_e = τ_max − (τ_max − τ_min)·e/(T − 1): τ_max in the first epoch, τ_min in the last (GDAS's [code])."""
    return tau_max - (tau_max - tau_min) * epoch / max(epochs - 1, 1)


@HOOKS.register("temperature")
class Temperature(Hook):
    """Sets τ_e on the Gumbel parameterisation at every epoch start (a resumed run recomputes it from its epoch)."""

    def __init__(self, context: SearchContext):
        super().__init__(context)
        if not isinstance(context.model.arch, GumbelSoftmax):
            raise GradnasError("the temperature hook needs --arch gumbel or gumbel-hard, "
                               f"not {context.config.arch!r}")

    def on_epoch_start(self, context: SearchContext, epoch: int) -> None:
        c = self.config
        context.model.arch.set_temperature(temperature(epoch, c.epochs, c.tau_max, c.tau_min))

    def on_epoch_end(self, context: SearchContext, epoch: int) -> dict[str, Any]:
        return {"tau": temperature(epoch, self.config.epochs, self.config.tau_max, self.config.tau_min)}


#: The authors' NB201 search (configs/nas-benchmark/algos/GDAS.config, scripts-search/algos/GDAS.sh) [code]:
#: 240 epochs, Nesterov SGD 0.025 → 0.001 cosine, wd 5e-4, batch 64, α Adam 3e-4 / wd 1e-3, first order.
GDAS_SEARCH = {"nb201": {"epochs": 240}, "darts": {}}


@PRESETS.register("gdas")
def gdas(space: str) -> dict:
    return {**GDAS_SEARCH.get(space, {}), "arch": "gumbel-hard", "hooks": ["temperature"], "order": 1,
            "tau_max": 10.0, "tau_min": 0.1}


@PRESETS.register("snas")
def snas(space: str) -> dict:
    return {"arch": "gumbel", "hooks": ["temperature"], "order": 1, "tau_max": 1.0, "tau_min": 0.33}
