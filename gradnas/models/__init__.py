"""Evaluation networks compiled from genotypes, and the builder that picks one for a dataset."""
from __future__ import annotations

import torch.nn as nn

from ..errors import GradnasError
from ..genotypes import Genotype, space_of
from .darts_eval import AuxiliaryHead, EvalCell, NetworkCIFAR, NetworkImageNet
from .nb201_eval import InferCell, NB201Network
from .saved import build_network

__all__ = ["AuxiliaryHead", "EvalCell", "InferCell", "NB201Network", "NetworkCIFAR", "NetworkImageNet",
           "build_eval_network", "count_parameters"]

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "imagenet16-120": 120, "tiny-imagenet": 200}


def build_eval_network(genotype: Genotype, dataset: str = "cifar10", num_classes: int | None = None,
                       **kwargs) -> nn.Module:
    """The evaluation network of the genotype's space (``SearchSpace.networks``): NB201Network for nb201
    genotypes; for darts ones NetworkImageNet on ``imagenet``, else NetworkCIFAR.

    ``kwargs`` go to the network's constructor (C, layers, auxiliary, drop_path_prob, N, in_channels, ...).
    """
    dataset = dataset.lower()
    if num_classes is None:
        if dataset not in NUM_CLASSES:
            raise GradnasError(f"no default class count for dataset {dataset!r}; pass num_classes")
        num_classes = NUM_CLASSES[dataset]
    if genotype.cells is not None and kwargs.get("layers") is None:  # one genotype per cell fixes the depth
        kwargs["layers"] = len(genotype.cells)
    return build_network(space_of(genotype).network_for(dataset), genotype, num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module, exclude_aux: bool = True) -> int:
    """Weight count as papers report it: the auxiliary head is a training aid and left out by default."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not (exclude_aux and "auxiliary_head" in name.split(".")))
