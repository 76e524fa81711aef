"""NAS-Bench-201 evaluation network compiled from a genotype (docs/methods.md §1.2)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GradnasError
from ..genotypes import CellGenotype, Genotype, space_of
from ..spaces.blocks import ResidualBlock
from ..spaces.ops import build_op


class InferCell(nn.Module):
    """``node_j = Σ_{i<j} op_{i→j}(node_i)``; the output is the last node, with C channels throughout.

    ``none`` edges add zero, so they are neither built nor run; a node whose edges are all ``none`` is zero.
    """

    def __init__(self, genotype: CellGenotype, C: int, ops: str = "nb201"):
        super().__init__()
        self.nodes = nn.ModuleList()
        sources = []
        for j, pairs in enumerate(genotype.nodes, start=1):
            if any(not 0 <= i < j for _, i in pairs):
                raise GradnasError(f"node {j} of genotype {genotype} reads a node that is not before it")
            live = [(op, i) for op, i in pairs if op != "none"]
            self.nodes.append(nn.ModuleList(build_op(ops, op, C, 1, affine=True) for op, _ in live))
            sources.append(tuple(i for _, i in live))
        self.sources = tuple(sources)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for ops, sources in zip(self.nodes, self.sources):
            outs = [op(states[i]) for op, i in zip(ops, sources)]
            states.append(sum(outs) if outs else torch.zeros_like(x))
        return states[-1]


class NB201Network(nn.Module):
    """Stem, N cells at C, residual block, N cells at 2C, residual block, N cells at 4C, BN-ReLU-pool-linear.

    ``genotype.cell(k, False)`` gives cell k (counting cells only), so per-cell genotypes work too.
    Returns ``(logits, None)`` to match the DARTS evaluation nets' ``(logits, aux)``.
    """

    def __init__(self, genotype: Genotype, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if "nb201" not in space_of(genotype).networks:
            raise GradnasError(f"NB201Network needs an nb201-space genotype, got {genotype.space!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                blocks.append(ResidualBlock(width // 2, width))
            blocks += [InferCell(genotype.cell(stage * N + k, False), width, genotype.space) for k in range(N)]
        self.cells = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(out).flatten(1)), None
