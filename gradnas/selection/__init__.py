"""Selection: from architecture weights to a genotype."""
from __future__ import annotations

from ..arch.base import Architecture
from ..genotypes import Genotype
from ..options import Option, declare
from ..spaces import SPACES
from .rules import RULES, argmax_per_edge, top2_edges


def derive_genotype(arch: Architecture, space: str, rule: str | None = None) -> Genotype:
    """Apply a rule (default: the space's) to every cell's weights; per-cell architectures give one genotype per
    cell."""
    select = RULES[rule or SPACES[space].rule]
    cells = [select(w, arch.op_names, arch.in_degrees) for w in arch.selection_weights()]
    first = {kind: cells[arch.cell_types.index(kind)] for kind in ("normal", "reduce") if kind in arch.cell_types}
    return Genotype(space, first["normal"], first.get("reduce"), tuple(cells) if arch.per_cell else None)


__all__ = ["RULES", "derive_genotype", "top2_edges", "argmax_per_edge"]


declare(
    "selection",
    Option("selection", str | None, None,
           'genotype rule: {choices} (default: darts in the darts space, argmax in nb201)', choices=RULES.names),
)
