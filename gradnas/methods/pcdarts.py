"""PC-DARTS presets (METHODS.md §3): partial channels K=4 with edge normalisation, first order."""
from ..config import PRESETS


@PRESETS.register("pc-darts")
def pc_darts(space: str) -> dict:
    return {"partial_k": 4, "edge_norm": True, "batch_size": 256, "lr": 0.1, "lr_min": 0.0,
            "arch_lr": 6e-4, "arch_warmup_epochs": 15, "epochs": 50, "order": 1}
