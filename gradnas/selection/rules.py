"""Rules that turn a cell's (E, |O|) weight matrix into a discrete cell genotype.

Weights are ranked in their own precision (float64 weights stay float64), as the authors' code ranks its
tensors: a cast to float32 would tie weights that differ only beyond its precision. ``in_degrees`` gives each
node's incoming edges; node n reads the n states before it, so the first node's number is its in-degree."""
from __future__ import annotations

import torch

from ..genotypes import CellGenotype
from ..registry import Registry

RULES: Registry = Registry("selection rule")


def _node_slices(in_degrees: tuple[int, ...]) -> list[tuple[int, int]]:
    start, slices = 0, []
    for degree in in_degrees:
        slices.append((start, degree))
        start += degree
    return slices


@RULES.register("darts")
def top2_edges(W: torch.Tensor, op_names: tuple[str, ...], in_degrees: tuple[int, ...]) -> CellGenotype:
    """DARTS rule (docs/methods.md §1.1): per node keep the two incoming edges with the strongest non-none op
    (stable: ties go to the lower source), each with its strongest non-none op. Pairs are listed strongest first, as the original code does."""
    W = W.detach().cpu()
    usable = torch.tensor([name != "none" for name in op_names])
    masked = W.masked_fill(~usable, float("-inf"))
    best_weight, best_op = masked.max(dim=1)
    nodes = []
    for start, degree in _node_slices(in_degrees):
        order = sorted(range(degree), key=lambda j: -best_weight[start + j].item())  # sorted() is stable
        nodes.append(tuple((op_names[int(best_op[start + j])], j) for j in order[:2]))
    return CellGenotype(tuple(nodes), tuple(range(in_degrees[0], in_degrees[0] + len(in_degrees))))


@RULES.register("argmax")
def argmax_per_edge(W: torch.Tensor, op_names: tuple[str, ...], in_degrees: tuple[int, ...]) -> CellGenotype:
    """NAS-Bench-201 rule (docs/methods.md §1.2): every edge keeps its strongest op, none included."""
    best = W.detach().cpu().argmax(dim=1).tolist()
    nodes = tuple(tuple((op_names[best[start + j]], j) for j in range(degree))
                  for start, degree in _node_slices(in_degrees))
    return CellGenotype(nodes, (in_degrees[-1],))
