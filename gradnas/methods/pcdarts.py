"""PC-DARTS presets (docs/methods.md §3): partial channels K=4 with edge normalisation, first order."""
from . import PRESETS


@PRESETS.register("pc-darts")
def pc_darts(space: str) -> dict:
    return {"partial_k": 4, "edge_norm": True, "batch_size": 256, "lr": 0.1, "lr_min": 0.0,
            "arch_lr": 6e-4, "arch_warmup_epochs": 15, "epochs": 50, "order": 1}


@PRESETS.register("pc-darts-imagenet")
def pc_darts_imagenet(space: str) -> dict:
    """The ImageNet search: K=2 on 10 % / 2.5 % of the training set as train / val (docs/methods.md §3), with the
    rest of the authors' ``train_search_imagenet.py``: the 8-fold down-sampling stems of their 224-px
    supernet, a linear warm-up of the weight lr over the first 5 epochs (their code does it when the batch
    exceeds 256, as this one does) and the architecture gradient's norm clipped at 5, as the weights'."""
    return {**pc_darts(space), "partial_k": 2, "batch_size": 1024, "lr": 0.5, "arch_lr": 6e-3,
            "arch_warmup_epochs": 35, "epochs": 50, "train_subset": 0.1, "val_subset": 0.025,
            "imagenet_stem": True, "lr_warmup_epochs": 5, "arch_grad_clip": 5.0}
