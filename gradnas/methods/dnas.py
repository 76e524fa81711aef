"""DNAS presets (docs/methods.md §6): global search, one cell architecture per cell, with the decoupled ψ or,
as the paper's baseline, a free per-cell softmax ("PC-DARTS global")."""
from . import PRESETS
from ..errors import GradnasError
from ..spaces import SPACES
from ..spaces.ops import DARTS_OPS

# Seven candidates: DARTS's ops without none, as in Fair-DARTS.
OPS = [op for op in DARTS_OPS if op != "none"]


@PRESETS.register("dnas")
def dnas(space: str) -> dict:
    if not SPACES[space].per_cell:
        raise GradnasError(f"DNAS searches the darts space (or another with one genotype per cell), not {space!r}")
    return {"arch": "dnas", "ops": list(OPS), "layers": 14, "channels": 16,
            "partial_k": 4,            # the PC-DARTS partial-channel edge, K=4 [interp]
            "skip_dropout": 0.2,       # "skip-connect drop 0.2" [paper], as dropout on that branch [interp]
            "zero_one_weight": 10.0,   # Fair-DARTS zero-one loss on σ(α), σ(γ)
            "order": 1, "epochs": 50, "lr": 0.025, "lr_min": 0.001, "weight_decay": 3e-4,
            "arch_lr": 3e-4, "arch_betas": [0.5, 0.999], "arch_weight_decay": 1e-3,
            # batch 96 on CIFAR-100 [paper]; 64 on CIFAR-10, where the paper is silent [interp]
            "batch_size": 64, "by_data": {"cifar100": {"batch_size": 96}}}


@PRESETS.register("pc-darts-global")
def pc_darts_global(space: str) -> dict:
    """PC-DARTS with per-cell architecture weights: a free (L, 14, 7) α with a softmax per edge in each cell,
    and PC-DARTS's edge normalisation (β per cell); DNAS's own parts, the skip dropout and the zero-one loss,
    are left out. The budget (cells, ops, epochs, optimisers, batch) follows DNAS so the two compare like for
    like [interp]."""
    return {**dnas(space), "arch": "per-cell-softmax", "edge_norm": True, "skip_dropout": 0.0,
            "zero_one_weight": 0.0}
