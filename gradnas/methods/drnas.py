"""DrNAS (docs/methods.md §15): Dirichlet op weights with the pathwise gradient (Chen et al., ICLR 2021).

NB201: the authors' ``201-space/train_search.py`` defaults [code]: 100 epochs, plain momentum SGD with wd 3e-4,
first order, all channels (k = 1); batch 64, lr 0.025 → 0.001, α Adam 3e-4 / wd 1e-3 are DARTS's already.
"""
from . import PRESETS

SEARCH = {"nb201": {"epochs": 100, "nesterov": False, "weight_decay": 3e-4}, "darts": {}}


@PRESETS.register("drnas")
def drnas(space: str) -> dict:
    return {**SEARCH.get(space, {}), "arch": "dirichlet", "order": 1}
