"""The NAS-Bench-201 search space (docs/methods.md §1.2): 4-node cells that sum, on a 3-stage residual macro."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..arch.base import CellWeights
from .. import edges as edge_kinds  # a module import: gradnas.edges imports these spaces' ops in turn
from .blocks import ResidualBlock
from .darts import sum_nodes
from .ops import NB201_OPS, OPS
from .space import CellFormat, SearchSpace, ShrinkSubsets, register_space

NODES = 3
IN_DEGREES = (1, 2, 3)  # edges (1←0), (2←0), (2←1), (3←0), (3←1), (3←2)


class SearchCell(nn.Module):
    """``nodes`` nodes after the input, node j summing edges from all j earlier states; the output is the last."""

    node_sum = None  # None: sum_nodes, edge by edge; else an executor with its call (gradnas.edges.batched)

    def __init__(self, C: int, op_names: tuple[str, ...], edge: str, edge_options: dict, nodes: int = NODES,
                 ops: str = "nb201"):
        super().__init__()
        self.nodes = nodes
        self.edges = nn.ModuleList(edge_kinds.build_edge(edge, ops, op_names, C, 1, **edge_options)
                                   for n in range(1, nodes + 1) for _ in range(n))

    def forward(self, x: torch.Tensor, weights: CellWeights) -> torch.Tensor:
        return (self.node_sum or sum_nodes)(self.edges, [x], self.nodes, weights)[-1]


class NB201Supernet(nn.Module):
    """Stem, N cells at C, residual block, N cells at 2C, residual block, N cells at 4C, BN-ReLU-pool-linear.

    ``nodes`` intermediate nodes per cell (NAS-Bench-201: 3); ``ops`` names the op registry (``OPS[ops]``),
    so a space of the user's own can reuse this macro with other cells or ops.
    """

    def __init__(self, C: int = 16, num_classes: int = 10, layers: int = 5, in_channels: int = 3,
                 op_names: tuple[str, ...] = NB201_OPS, edge: str = "mixed", edge_options: dict | None = None,
                 nodes: int = NODES, ops: str = "nb201"):
        super().__init__()
        self.op_names = tuple(op_names)
        self.in_degrees = tuple(range(1, nodes + 1))
        self.concat = (nodes,)  # the output is the last node
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        self.cell_types: list[str] = []
        self.blocks = nn.ModuleDict()
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                self.blocks[str(len(self.cells))] = ResidualBlock(width // 2, width)
            for _ in range(layers):
                self.cells.append(SearchCell(width, self.op_names, edge, edge_options or {}, nodes, ops))
                self.cell_types.append("normal")
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: torch.Tensor, weights: list[CellWeights]) -> torch.Tensor:
        x = self.stem(x)
        for k, (cell, w) in enumerate(zip(self.cells, weights)):
            if str(k) in self.blocks:
                x = self.blocks[str(k)](x)
            x = cell(x, w)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


NB201 = register_space(SearchSpace(
    "nb201", NB201Supernet, CellFormat(OPS["nb201"], first_node=1, pairs_per_node=None, num_nodes=NODES, zero_op=True),
    NB201_OPS, rule="argmax", networks=("nb201",), shrink=ShrinkSubsets("edge", 1, True), nodes=NODES,
    text_form="nb201", benchmark="nb201",
    # DARTS on NB201 as in the benchmark's own code (docs/methods.md §1.2)
    defaults={"layers": 5, "nesterov": True, "weight_decay": 5e-4}))
