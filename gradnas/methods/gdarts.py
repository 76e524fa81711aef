"""G-DARTS-A presets (docs/methods.md §4): channel groups with per-group attention, on DARTS and on PC-DARTS.

The paper's search settings are lost: DARTS first order with its defaults, the weight learning rate annealed
to zero and cutout on during search [paper]; G-PC-DARTS-A keeps PC-DARTS's settings [interp].
"""
from . import PRESETS
from .pcdarts import pc_darts

GROUPS = 4  # M; the grouped-convolution g is lost and defaults to M (docs/methods.md §4 [interp])
ATTENTION = {"groups": GROUPS, "group_attention": True, "cutout": 0.5}  # cutout 16 px on 32-px CIFAR
DARTS_FIRST_ORDER = {"order": 1, "lr_min": 0.0}


@PRESETS.register("darts-attention")
def darts_attention(space: str) -> dict:
    """The full-width mixed op's output split into M groups, group m scaled by a[ℓ, e, m]."""
    return {**DARTS_FIRST_ORDER, **ATTENTION, "group_mode": "split"}


@PRESETS.register("g-darts-a")
def g_darts_a(space: str) -> dict:
    """DARTS-with-Attention with every conv of the candidate ops grouped (g = M)."""
    return {**darts_attention(space), "conv_groups": GROUPS}


@PRESETS.register("g-darts")
def g_darts(space: str) -> dict:
    """Exact shared-weight parallel sampling: M groups through one op built for C/M channels, attention,
    no shuffle [interp]."""
    return {**DARTS_FIRST_ORDER, **ATTENTION, "group_mode": "exact"}


@PRESETS.register("g-pc-darts-a")
def g_pc_darts_a(space: str) -> dict:
    """PC-DARTS (K=4, edge normalisation, warm-up) with all K groups through the shared op, each scaled by
    attention, then the shuffle; stride-2 edges stride every group, no max-pool bypass [interp]."""
    return {**pc_darts(space), **ATTENTION, "group_mode": "exact", "partial_sampling": "all"}
