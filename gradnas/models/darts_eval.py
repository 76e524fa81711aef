"""DARTS-space evaluation networks compiled from a genotype (docs/methods.md §1.1).

``NetworkCIFAR`` and ``NetworkImageNet`` share one body (a stack of :class:`EvalCell`, an optional
auxiliary head, global pooling and a linear classifier) and differ only in their stems and aux heads.
Both return ``(logits, aux_logits)``; ``aux_logits`` is ``None`` unless the head exists and the net trains.
The trainer sets ``drop_path_prob`` on the network each epoch (a 0-dim device tensor it fills, when drop path is on).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GradnasError
from ..genotypes import CellGenotype, Genotype, space_of
from ..spaces.blocks import drop_path, imagenet_stems
from ..spaces.ops import FactorizedReduce, ReLUConvBN, build_op

FIRST_NODE = 2  # nodes 0 and 1 are the two preprocessed cell inputs


class EvalCell(nn.Module):
    """A discrete cell: each node sums its genotype pairs' op outputs; the output concatenates ``concat``."""

    def __init__(self, genotype: CellGenotype, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 ops: str = "darts"):
        super().__init__()
        self.reduction = reduction
        # After a reduction cell c_{k-2} has twice the resolution of c_{k-1}, so it must be halved too.
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=True)

        self.nodes = nn.ModuleList()
        sources = []
        for n, pairs in enumerate(genotype.nodes, start=FIRST_NODE):
            if not pairs or any(not 0 <= src < n for _, src in pairs):
                raise GradnasError(f"node {n} of genotype {genotype} has no inputs or reads a node not before it")
            # Only edges leaving the cell inputs change resolution in a reduction cell.
            self.nodes.append(nn.ModuleList(
                build_op(ops, op, C, 2 if reduction and src < FIRST_NODE else 1, affine=True) for op, src in pairs))
            sources.append(tuple(src for _, src in pairs))
        self.sources = tuple(sources)
        # Cell inputs are not concatenable: in a reduction cell they have the wrong resolution.
        last = FIRST_NODE + len(genotype.nodes) - 1
        if not genotype.concat or any(not FIRST_NODE <= i <= last for i in genotype.concat):
            raise GradnasError(f"concat {genotype.concat} names nodes outside {FIRST_NODE}..{last}")
        self.concat = tuple(genotype.concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float | torch.Tensor = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        drop = self.training and (torch.is_tensor(drop_prob) or drop_prob > 0)  # a tensor is never read back
        for ops, sources in zip(self.nodes, self.sources):
            outs = [op(states[src]) for op, src in zip(ops, sources)]
            if drop:  # as in the DARTS code, only ops with weights or pooling are dropped, never identities
                outs = [h if isinstance(op, nn.Identity) else drop_path(h, drop_prob) for op, h in zip(ops, outs)]
            states.append(sum(outs))
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier on the output of the second reduction cell (loss weight set by the trainer).

    CIFAR (8×8 input): pool stride 3 and BN after the 768-channel conv; ImageNet (7×7): stride 2, no BN.
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, bn_after_768: bool):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),  # → 2×2
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),  # → 1×1
            *([nn.BatchNorm2d(768)] if bn_after_768 else []), nn.ReLU())
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class _DartsEvalNetwork(nn.Module):
    """Cells with reductions at ⌊L/3⌋ and ⌊2L/3⌋ (channels doubled there), aux head after cell ⌊2L/3⌋.

    Subclasses build their stems first, then call :meth:`_build_body`, and implement :meth:`stems`.
    """

    def _build_body(self, genotype: Genotype, C: int, num_classes: int, layers: int, auxiliary: bool,
                    drop_path_prob: float, C_stem: int, reduction_prev: bool, aux_pool_stride: int, aux_bn: bool):
        if not {"cifar", "imagenet"} & set(space_of(genotype).networks):
            raise GradnasError(f"a DARTS evaluation net needs a darts-space genotype, got {genotype.space!r}")
        if genotype.cells is not None and len(genotype.cells) != layers:
            raise GradnasError(f"the genotype has {len(genotype.cells)} cell genotypes, one per cell; "
                               f"it cannot build a {layers}-cell network")
        self.drop_path_prob = drop_path_prob
        self.aux_index = 2 * layers // 3
        self.cells = nn.ModuleList()
        self.auxiliary_head: AuxiliaryHead | None = None
        C_pp, C_p, C_curr = C_stem, C_stem, C
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            C_curr *= 2 if reduction else 1
            cell = EvalCell(genotype.cell(i, reduction), C_pp, C_p, C_curr, reduction, reduction_prev, genotype.space)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            if i == self.aux_index and auxiliary:
                self.auxiliary_head = AuxiliaryHead(C_p, num_classes, aux_pool_stride, aux_bn)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # fixed-size pools (7 on ImageNet) would reject small inputs
        self.classifier = nn.Linear(C_p, num_classes)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0, s1 = self.stems(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), aux


class NetworkCIFAR(_DartsEvalNetwork):
    def __init__(self, genotype: Genotype, C: int = 36, num_classes: int = 10, layers: int = 20,
                 auxiliary: bool = True, drop_path_prob: float = 0.2, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        self._build_body(genotype, C, num_classes, layers, auxiliary, drop_path_prob,
                         C_stem=3 * C, reduction_prev=False, aux_pool_stride=3, aux_bn=True)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(_DartsEvalNetwork):
    """Mobile setting: the stems reduce the input 8-fold before the cells, so the first cell sees a reduction."""

    def __init__(self, genotype: Genotype, C: int = 48, num_classes: int = 1000, layers: int = 14,
                 auxiliary: bool = True, drop_path_prob: float = 0.0, in_channels: int = 3):
        super().__init__()
        self.stem0, self.stem1 = imagenet_stems(in_channels, C)
        self._build_body(genotype, C, num_classes, layers, auxiliary, drop_path_prob,
                         C_stem=C, reduction_prev=True, aux_pool_stride=2, aux_bn=False)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
