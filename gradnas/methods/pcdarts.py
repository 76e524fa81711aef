"""PC-DARTS presets (docs/methods.md §3): partial channels K=4 with edge normalisation, first order."""
from ..config import PRESETS


@PRESETS.register("pc-darts")
def pc_darts(space: str) -> dict:
    return {"partial_k": 4, "edge_norm": True, "batch_size": 256, "lr": 0.1, "lr_min": 0.0,
            "arch_lr": 6e-4, "arch_warmup_epochs": 15, "epochs": 50, "order": 1}


@PRESETS.register("pc-darts-imagenet")
def pc_darts_imagenet(space: str) -> dict:
    """The ImageNet search: K=2 on 10 % / 2.5 % of the training set as train / val (docs/methods.md §3).

    docs/methods.md gives only these values, so the supernet is the DARTS one on the dataset's images (the
    authors' extra down-sampling stem for 224-px inputs is not part of the specification)."""
    return {**pc_darts(space), "partial_k": 2, "batch_size": 1024, "lr": 0.5, "arch_lr": 6e-3,
            "arch_warmup_epochs": 35, "epochs": 50, "train_subset": 0.1, "val_subset": 0.025}
