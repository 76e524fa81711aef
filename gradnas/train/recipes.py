"""Training recipes for found architectures and the typed configuration of a training run.

The dataclass defaults are the DARTS CIFAR recipe (docs/methods.md §1.1). A recipe is data: the fields it
changes. Precedence, lowest first: defaults, recipe, config file, explicit arguments.

- ``cifar``: NetworkCIFAR, 20 cells, C=36, 600 epochs, batch 96, SGD momentum 0.9, lr 0.025 cosine → 0,
  weight decay 3e-4, clip 5, crop + flip + cutout 16 px (0.5 of the side), drop path 0.2·epoch/epochs, auxiliary weight 0.4.
- ``cifar-is-darts``: the same with 5 linear warm-up epochs and Nesterov momentum (docs/methods.md §5.3).
- ``imagenet``: NetworkImageNet (mobile setting), 14 cells, C=48, 250 epochs, batch 128, lr 0.1 × 0.97 per
  epoch, weight decay 3e-5, label smoothing 0.1, auxiliary 0.4, no drop path, clip 5 (docs/methods.md §1.1).
- ``imagenet-is-darts``: the same with lr 0.1 cosine → 0, 5 warm-up epochs (docs/methods.md §5.3) and Nesterov
  momentum (the authors' ``configs/opts/NAS-IMAGENET.config``).
- ``cifar-pc-darts``: ``cifar`` with drop path 0.3, the default of PC-DARTS's ``train.py``.
- ``nb201``: NB201Network (C=16, 5 cells per stage) with NAS-Bench-201's 200-epoch setting, which docs/methods.md
  §1.2 does not restate; taken from the benchmark's hyper-parameter file (AutoDL-Projects
  ``configs/nas-benchmark/hyper-opts/200E.config``): SGD Nesterov momentum 0.9, lr 0.1 cosine → 0, weight
  decay 5e-4, batch 256, 200 epochs, crop + flip, no gradient clipping, no auxiliary head or drop path.

Augmentation is the data package's batched random crop (zero padding of 1/8 of the side) and flip, plus cutout
where the recipe has it, sized as a fraction of the side (0.5: the 16 px of 32-px CIFAR), so a recipe does the
same on 8-px digits and 224-px ImageNet. For ImageNet this replaces the DARTS code's random-resized crop and colour jitter
(a deviation: the whole dataset lives on the device as fixed-size uint8 images).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..config import CUDA_GRAPH_MODES, given_options
from ..data import ImageDataset, check_cutout, load_dataset
from ..errors import GradnasError
from ..limits import check_sizes
from ..genotypes import Genotype, parse_genotype, space_of
from ..registry import Registry


@dataclass
class TrainConfig:
    genotype: str | None = None          # anything `gradnas show` accepts; None only when resuming
    recipe: str | None = None            # None: nb201 for NB201 genotypes, imagenet for ≥160 px images, else cifar
    data: str = "cifar10"
    data_root: str | None = None
    image_size: int | None = None        # resize the data to this square side
    out: str = "runs/train"
    # network
    network: str = "cifar"               # cifar | imagenet | nb201 (models.saved.NETWORKS)
    channels: int = 36
    layers: int = 20                     # cells (DARTS nets) or cells per stage (NB201); unless given, a
                                         # per-cell genotype's number of cells
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path: float = 0.2               # final drop-path probability; grows as drop_path·epoch/epochs
    # optimisation
    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0
    lr_schedule: str = "cosine"          # "cosine" to lr_min, or "exponential": × lr_decay per epoch
    lr_decay: float = 0.97
    warmup_epochs: int = 0               # linear warm-up, per epoch, before the schedule
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0               # gradient-norm clip; 0 turns it off
    label_smoothing: float = 0.0
    cutout: float = 0.5                  # cutout square's side / image side: DARTS's 16 px at 32 px
    # run
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    channels_last: bool = True
    amp: bool = False                    # bf16 autocast on GPUs that support it, else fp16 + loss scaling
    cuda_graph: str = "auto"             # capture each training step as a CUDA graph: auto, on, off
    sync_bn: bool = False                # under torchrun: BN statistics over all ranks' batches
    steps_per_epoch: int | None = None   # cap on iterations per epoch (quick looks, tests)
    eval_every: int = 1                  # test-set evaluation every N epochs (and always after the last)
    log_every: int = 20
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}
#: What a resumed training run may change: rates, clipping, length, logging, device (the schedule follows).
RESUMABLE = frozenset({"out", "lr", "lr_min", "grad_clip", "epochs", "log_every", "eval_every", "progress", "device",
                       "data_root", "cuda_graph"})

HELP = {
    "genotype": "genotype: published name, JSON file, search directory, DARTS text or NB201 arch string",
    "recipe": "training recipe (default: nb201 for NB201 genotypes, imagenet for images of >= 160 px, else cifar)",
    "data": "dataset: digits, cifar10, cifar100, a .npz file or an image-folder directory",
    "network": "evaluation network: cifar, imagenet or nb201 (set by the recipe)",
    "layers": "cells (DARTS nets) or cells per stage (NB201)", "drop_path": "final drop-path probability",
    "lr_schedule": "cosine (to --lr-min) or exponential (x --lr-decay per epoch)",
    "grad_clip": "gradient-norm clip (0: off)", "amp": "mixed precision on GPUs (bf16, else fp16 with loss scaling)",
    "sync_bn": "under torchrun, batch-norm statistics over the batches of all ranks",
    "steps_per_epoch": "cap on iterations per epoch", "eval_every": "evaluate on the test split every N epochs",
    "data_root": "where cifar10/cifar100 live or are downloaded to (else $GRADNAS_DATA, ~/.cache/gradnas/data)",
    "image_size": "resize images to this square side (default: as stored)", "out": "training run directory",
    "channels": "initial channels C", "auxiliary": "auxiliary head after the cell at 2/3 of the depth",
    "auxiliary_weight": "loss weight of the auxiliary head", "epochs": "training epochs",
    "batch_size": "batch size (per rank under torchrun)", "lr": "initial learning rate (SGD)",
    "lr_min": "final learning rate of the cosine schedule", "lr_decay": "exponential schedule: factor per epoch",
    "warmup_epochs": "epochs of linear learning-rate warm-up", "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum", "weight_decay": "weight decay", "label_smoothing": "label smoothing",
    "cutout": "cutout square's side as a fraction of the image side (0.5: 16 px on 32-px CIFAR; 0: off)", "seed": "random seed",
    "device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N",
    "deterministic": "deterministic kernels (slower)", "channels_last": "channels-last memory layout",
    "cuda_graph": "capture each training step as a CUDA graph and replay it: auto (on a CUDA device, where the "
                  "run allows it), on, off",
    "log_every": "non-finite-loss check and progress-bar update every N iterations", "progress": "progress bar",
}

#: Published training recipes: the fields each changes from the CIFAR defaults.
RECIPES: Registry[dict[str, Any]] = Registry("training recipe")
_IMAGENET = {"network": "imagenet", "channels": 48, "layers": 14, "epochs": 250, "batch_size": 128, "lr": 0.1,
             "lr_schedule": "exponential", "lr_decay": 0.97, "weight_decay": 3e-5, "label_smoothing": 0.1,
             "drop_path": 0.0, "cutout": 0}
RECIPES.register("cifar")({})
RECIPES.register("cifar-is-darts")({"warmup_epochs": 5, "nesterov": True})
RECIPES.register("cifar-pc-darts")({"drop_path": 0.3})
RECIPES.register("imagenet")(_IMAGENET)
RECIPES.register("imagenet-is-darts")({**_IMAGENET, "lr_schedule": "cosine", "warmup_epochs": 5, "nesterov": True})
RECIPES.register("nb201")({"network": "nb201", "channels": 16, "layers": 5, "auxiliary": False, "drop_path": 0.0,
                           "epochs": 200, "batch_size": 256, "lr": 0.1, "nesterov": True, "weight_decay": 5e-4,
                           "grad_clip": 0.0, "cutout": 0})
#: The mobile-setting net reduces its input 32-fold before the auxiliary head, whose 5×5 pool needs ≥ 5×5.
IMAGENET_MIN_SIZE = 160


def resolve_train_config(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None,
                         dataset: ImageDataset | None = None) -> TrainConfig:
    """The effective configuration from defaults, the recipe, a file and explicit values.

    Without a recipe, NB201 genotypes get ``nb201``; DARTS genotypes get ``imagenet`` when ``dataset`` (the data
    to train on, if already loaded) has images of at least 160 px, else ``cifar``.
    """
    return _resolve(_given(overrides, config_file), dataset)


def configure_training(overrides: dict[str, Any] | None = None,
                       config_file: str | Path | None = None) -> tuple[TrainConfig, ImageDataset | None]:
    """:func:`resolve_train_config`, loading the data first when the recipe follows it (a DARTS genotype and no
    recipe given); returns the dataset so that training does not load it again."""
    given = _given(overrides, config_file)
    dataset = None
    if not given.get("recipe") and len(space_of(_genotype(given)).networks) > 1:
        dataset = load_dataset(given.get("data", TrainConfig.data), given.get("data_root"),
                               image_size=given.get("image_size"))
    return _resolve(given, dataset), dataset


def _given(overrides: dict[str, Any] | None, config_file: str | Path | None) -> dict[str, Any]:
    return given_options(TrainConfig, overrides, config_file)


def _genotype(given: dict[str, Any]) -> Genotype:
    if not given.get("genotype"):
        raise GradnasError("no genotype to train: give a published name, a genotype file, a search directory, "
                           "a DARTS text form or an NB201 arch string")
    return parse_genotype(str(given["genotype"]))


def _resolve(given: dict[str, Any], dataset: ImageDataset | None) -> TrainConfig:
    genotype = _genotype(given)
    recipe = given.get("recipe") or default_recipe(genotype, dataset)
    values = {**RECIPES[recipe], **given, "recipe": recipe}
    if genotype.cells is not None and "layers" not in given:  # one genotype per cell fixes the depth
        values["layers"] = len(genotype.cells)
    config = TrainConfig(**values)
    check_train_config(config, genotype)
    return config


def default_recipe(genotype: Genotype, dataset: ImageDataset | None = None) -> str:
    """The recipe named after the network the genotype's space builds for the data (``SearchSpace.network_for``)."""
    large = dataset is not None and dataset.image_size >= IMAGENET_MIN_SIZE
    return space_of(genotype).network_for("imagenet" if large else "cifar")


def check_train_config(c: TrainConfig, genotype: Genotype) -> None:
    for f in fields(c):
        if isinstance(getattr(c, f.name), float) and not math.isfinite(getattr(c, f.name)):
            raise GradnasError(f"{f.name} must be a finite number, got {getattr(c, f.name)}")
    if not 0 <= c.seed < 2 ** 32:
        raise GradnasError(f"seed must lie in [0, 2**32), got {c.seed}")
    if c.steps_per_epoch is not None and c.steps_per_epoch < 1:
        raise GradnasError(f"steps_per_epoch must be at least 1, got {c.steps_per_epoch}")
    if c.lr <= 0:
        raise GradnasError(f"lr must be positive, got {c.lr}")
    if c.nesterov and c.momentum == 0:
        raise GradnasError("nesterov needs a positive momentum")
    for name in ("epochs", "batch_size", "channels", "layers", "eval_every", "log_every"):
        if getattr(c, name) < 1:
            raise GradnasError(f"{name} must be at least 1, got {getattr(c, name)}")
    check_sizes(c.layers, image_size=c.image_size)
    for name in ("lr", "lr_min", "weight_decay", "grad_clip", "auxiliary_weight", "warmup_epochs",
                 "momentum"):
        if getattr(c, name) < 0:
            raise GradnasError(f"{name} must not be negative, got {getattr(c, name)}")
    check_cutout(c.cutout)
    if c.cuda_graph not in CUDA_GRAPH_MODES:
        raise GradnasError(f"cuda_graph must be {', '.join(CUDA_GRAPH_MODES)}, got {c.cuda_graph!r}")
    if not 0 <= c.drop_path < 1 or not 0 <= c.label_smoothing < 1:
        raise GradnasError(f"drop_path and label_smoothing must lie in [0, 1), got {c.drop_path}, {c.label_smoothing}")
    if c.lr_schedule not in ("cosine", "exponential"):
        raise GradnasError(f"lr_schedule must be cosine or exponential, got {c.lr_schedule!r}")
    if c.warmup_epochs >= c.epochs:
        raise GradnasError(f"warmup_epochs ({c.warmup_epochs}) must be fewer than epochs ({c.epochs})")
    networks = space_of(genotype).networks
    if c.network not in networks:
        fix = " or ".join(f"--recipe {n}" for n in networks) if "cifar" not in networks else \
            "a DARTS recipe (cifar, imagenet)"
        raise GradnasError(f"a {genotype.space} genotype cannot build the {c.network} network; use {fix}")
    if c.network == "nb201" and (c.auxiliary or c.drop_path):
        raise GradnasError("the NB201 network has no auxiliary head or drop path: pass --no-auxiliary --drop-path 0")


def learning_rate(c: TrainConfig, epoch: int) -> float:
    """The rate of ``epoch`` (0-based), set once per epoch as in the DARTS code: linear warm-up to ``lr`` over
    ``warmup_epochs`` [docs/methods.md §5.3 gives only the count; linear per epoch is our reading], then cosine
    from ``lr`` to ``lr_min`` over the remaining epochs, or ``lr·lr_decay^t``."""
    if epoch < c.warmup_epochs:
        return c.lr * (epoch + 1) / c.warmup_epochs
    t, span = epoch - c.warmup_epochs, c.epochs - c.warmup_epochs
    if c.lr_schedule == "cosine":
        return c.lr_min + (c.lr - c.lr_min) * (1 + math.cos(math.pi * t / span)) / 2
    return c.lr * c.lr_decay ** t


def drop_path_prob(c: TrainConfig, epoch: int) -> float:
    """Drop-path probability of ``epoch``: ``drop_path · epoch / epochs`` (docs/methods.md §1.1)."""
    return c.drop_path * epoch / c.epochs
