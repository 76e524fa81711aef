"""The search-space descriptor: everything gradnas knows about one space, in one registered object.

Every part reads what it needs from the space's :class:`SearchSpace` instead of testing its name: the search
builds its supernet and default op set, selection applies its rule, shrinking its comparison subsets,
genotype I/O checks cells against its :class:`CellFormat` and writes its text form, training builds one of
its evaluation networks, diagrams name its nodes. Parts the descriptor names by key (``rule``, ``text_form``,
``networks``) live in registries of their own, so a user's space can reuse the built-in ones or add its own:

    register_space(SearchSpace("nb201-4", partial(NB201Supernet, nodes=4), CellFormat(OPS["nb201"], 1, None, 4, True),
                               NB201_OPS, rule="argmax", networks=("nb201",), shrink=ShrinkSubsets("edge", 1, True)))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn as nn

from ..options import Option, declare
from ..registry import Registry
from .ops import OPS


@dataclass(frozen=True)
class CellFormat:
    """The shape of a space's cell genotypes: what validation and the text forms need to know."""
    ops: Registry                 # the space's op registry: ops registered later (a user's own) are valid too
    first_node: int               # sources 0..first_node-1 are the cell inputs
    pairs_per_node: int | None    # None: node n reads every source 0..n-1 once, in order, and the cell outputs its last node
    num_nodes: int | None         # None: any number of intermediate nodes
    zero_op: bool                 # whether "none" may stay in a genotype

    def allowed_ops(self) -> list[str]:
        return [op for op in self.ops if self.zero_op or op != "none"]

    def output(self, num_nodes: int) -> tuple[int, ...]:
        """The nodes a cell of ``num_nodes`` intermediate nodes outputs by default: all of them (concatenated),
        or its last one when every node reads all earlier ones (a summing cell)."""
        last = self.first_node + num_nodes - 1
        return (last,) if self.pairs_per_node is None else tuple(range(self.first_node, last + 1))


@dataclass(frozen=True)
class ShrinkSubsets:
    """How progressive shrinking compares candidates in this space (docs/methods.md §5.1)."""
    grouping: str         # "node": all (edge, op) pairs into a node compete; "edge": each edge's ops compete
    keep: int             # candidates each subset keeps at the end
    none_survives: bool   # whether "none" may be among them


@dataclass(frozen=True)
class SearchSpace:
    name: str
    #: ``supernet(C=, num_classes=, layers=, in_channels=, op_names=, edge=, edge_options=, **options)``; the
    #: module has ``op_names``, ``cell_types``, ``in_degrees`` and ``concat``, and is called ``net(x, weights)``.
    supernet: Callable[..., nn.Module]
    cell: CellFormat
    default_ops: tuple[str, ...]
    rule: str                              # the default selection rule (gradnas.selection.RULES)
    networks: tuple[str, ...]              # evaluation networks its genotypes build (gradnas.models.saved.NETWORKS)
    shrink: ShrinkSubsets
    nodes: int = 4                         # intermediate nodes of a search cell unless the options say otherwise
    input_names: tuple[str, ...] = ("0",)  # diagram names of the cell inputs
    output_name: str = "out"               # diagram name of a concatenating cell's output
    text_form: str | None = None           # its genotypes' text form (gradnas.genotypes.TEXT_FORMS); None: JSON only
    reduction_cell: bool = False           # shared genotypes hold a reduction cell beside the normal one
    per_cell: bool = False                 # genotypes may hold one cell per network cell (global search)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # search options the space sets unless given
    #: The search options its supernet reads, beyond the common ones, and how (config → supernet keywords).
    options: tuple[str, ...] = ()
    #: Ops whose output is split in this many halves, each one grouped (the DARTS space's stride-2 skip).
    conv_group_split: int = 1
    benchmark: str | None = None           # the tabular benchmark that looks its cells up, if any

    @property
    def ops(self) -> Registry:
        return self.cell.ops

    def in_degrees(self, nodes: int | None = None) -> tuple[int, ...]:
        """Node n reads every earlier state: n incoming edges, for nodes first_node, first_node + 1, ..."""
        first = self.cell.first_node
        return tuple(range(first, first + (nodes or self.nodes)))

    def edges(self, nodes: int | None = None) -> tuple[tuple[int, int], ...]:
        """The cell as data: every edge's (source, target) in edge order (by target node, then source), the
        order of the supernet's edges, of the architecture weights' rows and of the executors."""
        return cell_edges(self.in_degrees(nodes))

    def supernet_options(self, config: Any) -> dict[str, Any]:
        """The configured values of the options the supernet reads (unset ones keep the supernet's defaults)."""
        values = {name: getattr(config, name) for name in self.options}
        return {name: value for name, value in values.items() if value is not None}

    def network_for(self, dataset: str) -> str:
        """The evaluation network for ``dataset``: an ImageNet network for ImageNet where the space has one."""
        return "imagenet" if dataset == "imagenet" and "imagenet" in self.networks else self.networks[0]


def cell_edges(in_degrees: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """(source, target) of every edge of a cell whose node n has n incoming edges (numbered from in_degrees[0])."""
    return tuple((source, node) for node, degree in enumerate(in_degrees, in_degrees[0]) for source in range(degree))


SPACES: Registry[SearchSpace] = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Make ``space`` known by its name, its op registry included (``OPS[name]``, used to build its ops)."""
    SPACES.register(space.name)(space)
    OPS.setdefault(space.name, space.ops)
    return space


declare(
    "supernet",
    Option("space", str, 'darts', 'search space: {choices}', choices=SPACES.names),
    Option("channels", int, 16, 'initial channels C of the supernet'),
    Option("layers", int | None, None, 'cells (darts; default 8) or cells per stage (nb201; default 5)'),
    Option("ops", list[str] | None, None, "candidate ops (default: the space's full set; DNAS drops none)"),
    Option("bn_running_stats", bool, True,
           'every supernet BN keeps running statistics (--no-bn-running-stats: batch statistics)'),
    Option("cell_bn_running_stats", bool, True,
           "the cells' BNs keep running statistics (IS-DARTS: off; stem, residual and final BN keep theirs)"),
)
