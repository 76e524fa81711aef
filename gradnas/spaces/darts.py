"""The DARTS cell search space (docs/methods.md §1.1): 14-edge cells, normal and reduction, on a CIFAR macro.

As in the DARTS code, a cell has ``steps`` intermediate nodes (4: 14 edges) and its output concatenates the
last ``multiplier`` of them (4: all).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..arch.base import CellWeights
from .. import edges as edge_kinds  # a module import: gradnas.edges imports these spaces' ops in turn
from ..errors import GradnasError
from ..options import Option, declare
from .blocks import imagenet_stems
from .ops import DARTS_OPS, OPS, FactorizedReduce, ReLUConvBN
from .space import CellFormat, SearchSpace, ShrinkSubsets, register_space

STEPS = 4
IN_DEGREES = tuple(range(2, 2 + STEPS))  # node n (2..5) has n incoming edges


def in_degrees(steps: int) -> tuple[int, ...]:
    return tuple(range(2, 2 + steps))


def darts_concat(steps: int, multiplier: int | None = None) -> tuple[int, ...]:
    """The nodes a search cell of ``steps`` nodes concatenates: the last ``multiplier`` (default all)."""
    return tuple(range(2 + steps - (multiplier or steps), 2 + steps))


def reduction_layers(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


class SearchCell(nn.Module):
    node_sum = None  # None: sum_nodes, edge by edge; else an executor with its call (gradnas.edges.batched)

    def __init__(self, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 op_names: tuple[str, ...], edge: str, edge_options: dict, steps: int = STEPS,
                 multiplier: int = STEPS, pool_bn: bool = True):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.preprocess0 = (FactorizedReduce(C_pp, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_pp, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            edge_kinds.build_edge(edge, "darts", op_names, C, 2 if reduction and source < 2 else 1, pool_bn=pool_bn,
                                  **edge_options)
            for n in in_degrees(steps) for source in range(n))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: CellWeights) -> torch.Tensor:
        states = (self.node_sum or sum_nodes)(self.edges, [self.preprocess0(s0), self.preprocess1(s1)], self.steps,
                                              weights)
        return torch.cat(states[-self.multiplier:], 1)


def sum_nodes(edges: nn.ModuleList, states: list[torch.Tensor], num_nodes: int,
              weights: CellWeights) -> list[torch.Tensor]:
    """Append ``num_nodes`` nodes to ``states``, each node = Σ over all earlier states of scale_e · edge_e(state).

    Shared by both spaces: edges are ordered by target node, then source.
    """
    ops = weights.ops.unbind(0)
    scales = weights.edges.unbind(0) if weights.edges is not None else None
    groups = weights.groups.unbind(0) if weights.groups is not None else None
    e = 0
    for n in range(num_nodes):
        node = None
        for h in list(states):
            args = (h, ops[e]) if groups is None else (h, ops[e], groups[e])
            y = edges[e](*args) if weights.sampled is None else edges[e](*args, sampled=weights.sampled[e])
            if y is not None:
                if scales is None:
                    node = y if node is None else node + y
                else:
                    node = y * scales[e] if node is None else torch.addcmul(node, y, scales[e])
            e += 1
        if node is None:
            raise RuntimeError(f"node {len(states)} has no active incoming op")
        states.append(node)
    return states


class DartsSupernet(nn.Module):
    """Stem, L cells (reductions at ⌊L/3⌋ and ⌊2L/3⌋), global pool, linear (docs/methods.md §1.1).

    Two choices tell quark0's supernet (the defaults, also PC-DARTS's) from IS-DARTS's (its vendored xautodl
    ``NASNetworkISDarts``, docs/methods.md §5.2): ``pool_bn`` puts a non-affine BN after every max/avg pool of the
    candidate ops, and ``final_bn_relu`` adds a BN + ReLU between the last cell and the global pool.
    ``concat`` names the nodes each cell concatenates, so derived genotypes carry them.
    ``imagenet_stem`` replaces the stem by the 8-fold down-sampling stems of PC-DARTS's 224-px search.
    """

    def __init__(self, C: int = 16, num_classes: int = 10, layers: int = 8, in_channels: int = 3,
                 op_names: tuple[str, ...] = DARTS_OPS, edge: str = "mixed", edge_options: dict | None = None,
                 stem_multiplier: int = 3, steps: int = STEPS, multiplier: int | None = None,
                 pool_bn: bool = True, final_bn_relu: bool = False, imagenet_stem: bool = False):
        super().__init__()
        multiplier = multiplier or steps
        if not 1 <= multiplier <= steps:
            raise GradnasError(f"multiplier must lie in 1..steps ({steps}), got {multiplier}")
        self.op_names = tuple(op_names)
        self.in_degrees = in_degrees(steps)
        self.concat = darts_concat(steps, multiplier)
        C_curr = stem_multiplier * C
        self.imagenet_stem = imagenet_stem
        if imagenet_stem:
            self.stem0, self.stem1 = imagenet_stems(in_channels, C_curr)
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cell_types: list[str] = []
        self.cells = nn.ModuleList()
        reduction_prev = imagenet_stem
        for i in range(layers):
            reduction = i in reduction_layers(layers)
            C_curr = C_curr * 2 if reduction else C_curr
            self.cells.append(SearchCell(C_pp, C_p, C_curr, reduction, reduction_prev,
                                         self.op_names, edge, edge_options or {}, steps, multiplier, pool_bn))
            self.cell_types.append("reduce" if reduction else "normal")
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_p), nn.ReLU()) if final_bn_relu else nn.Identity()
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x: torch.Tensor, weights: list[CellWeights]) -> torch.Tensor:
        if self.imagenet_stem:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        for cell, w in zip(self.cells, weights):
            s0, s1 = s1, cell(s0, s1, w)
        return self.classifier(self.global_pooling(self.lastact(s1)).flatten(1))


# A discrete DARTS cell has no zero edges: the genotype rule never picks none (docs/methods.md §1.1); a genotype
# may have any number of nodes, each with two inputs, and any concat list.
DARTS = register_space(SearchSpace(
    "darts", DartsSupernet, CellFormat(OPS["darts"], first_node=2, pairs_per_node=2, num_nodes=None, zero_op=False),
    DARTS_OPS, rule="darts", networks=("cifar", "imagenet"), shrink=ShrinkSubsets("node", 2, False), nodes=STEPS,
    input_names=("c_{k-2}", "c_{k-1}"), output_name="c_{k}", text_form="darts", reduction_cell=True, per_cell=True,
    defaults={"layers": 8}, options=("steps", "multiplier", "pool_bn", "final_bn_relu", "imagenet_stem"),
    conv_group_split=2))


declare(
    "supernet",
    Option("steps", int | None, None, 'darts: intermediate nodes per cell (default 4)'),
    Option("multiplier", int | None, None, 'darts: the cell output concatenates its last k nodes (default: all)'),
    Option("pool_bn", bool, True,
           "darts: a non-affine BN after the candidate pools (quark0's supernet; IS-DARTS: off)"),
    Option("final_bn_relu", bool, False, "darts: BN + ReLU before the global pool (IS-DARTS's supernet)"),
    Option("imagenet_stem", bool, False,
           'darts: the 8-fold down-sampling stems of a 224-px search (PC-DARTS ImageNet)'),
)
