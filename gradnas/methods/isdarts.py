"""IS-DARTS presets (docs/methods.md §5) and its two ablations, I-DARTS and S-DARTS.

IS-DARTS: binary masks instead of α, single-level training on all the data, progressive shrinking ranked by
the information-based importance of op outputs. I-DARTS: the same measure, one selection after the last
epoch (r = 1). S-DARTS: the same shrinking schedule ranked by DARTS's α, learned bilevel.
"""
from . import PRESETS

#: Published search settings per space (docs/methods.md §5.3): epochs T, shrink rate r, interval I, IIM images N.
#: The shrink-rate study's rows (DARTS space, (r, I) = (0.5, 18), (0.25, 6), (0.1, 2), (0.05, 1)) shrink in
#: the last 20 epochs, as the paper says: pass ``shrink_window=20`` with them (steps after T − 20 + s·I);
#: the published row (0.143, 3) keeps the code's T − S·I + s·I, after epochs 29, 32, …, 47.
SCHEDULES = {"nb201": {"epochs": 30, "shrink_rate": 0.25, "shrink_interval": 2, "iim_samples": 200},
             "darts": {"epochs": 50, "shrink_rate": 0.143, "shrink_interval": 3, "iim_samples": 600}}

#: Weight training of docs/methods.md §5.2 [code]: Nesterov SGD, cosine 0.025 → 0.001 stepped per epoch (the
#: code updates its scheduler every iteration, but that cosine reads the iteration only during warm-up, 0 here),
#: wd 3e-4 (the paper's appendix gives 5e-4 for NB201: --weight-decay 5e-4), batch 64, clip 5, crop + flip.
#: The supernet is the authors' (xautodl, docs/methods.md §5.2): the BNs inside the cells normalise with batch
#: statistics only (track_running_stats=False) while the stem, NB201's residual blocks and the final BN keep
#: running statistics, which eval mode (the importance measurement) uses; in the DARTS space no BN follows
#: the pools and a BN + ReLU precedes the global pool (NB201's supernet has both already).
TRAINING = {"nesterov": True, "momentum": 0.9, "lr": 0.025, "lr_min": 0.001,
            "weight_decay": 3e-4, "batch_size": 64, "grad_clip": 5.0, "cutout": 0.0}
SUPERNET = {"cell_bn_running_stats": False, "pool_bn": False, "final_bn_relu": True}


@PRESETS.register("is-darts")
def is_darts(space: str) -> dict:
    # Spaces without a published schedule (a user's own) take the options' defaults or what is given.
    return {**TRAINING, **SUPERNET, **SCHEDULES.get(space, {}), "arch": "masks", "arch_update": "none", "hooks": ["shrinking"],
            "importance": "fisher"}


@PRESETS.register("i-darts")
def i_darts(space: str) -> dict:
    """One selection of every subset's survivors after the last epoch: S = 1, interval 0."""
    return {**is_darts(space), "shrink_rate": 1.0, "shrink_interval": 0}


@PRESETS.register("s-darts")
def s_darts(space: str) -> dict:
    """IS-DARTS's schedule, ranked by softmax(α) learned with DARTS's first-order bilevel update."""
    return {**is_darts(space), "arch": "softmax", "arch_update": "bilevel", "order": 1, "importance": "alpha"}
