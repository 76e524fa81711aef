"""Progressive shrinking of comparison subsets (docs/methods.md §5.3): the schedule, the removals, the survivors.

A comparison subset is a group of (edge, op) candidates of one cell type that compete for ``keep`` places:
in NB201 the 5 ops of one edge (keep 1), in the DARTS space every (source, op) pair entering one node (keep 2;
both survivors may share a source). With S = round(1/r) steps, the step s (0-based) comes after the completed
epoch T − S·I + s·I (1-based; the authors' code), or T − W + s·I with a window of W epochs (the paper's
shrink-rate study: "shrinking only in the last 20 epochs"), and removes, in every subset, the
⌈(alive − keep)/(S − s)⌉ alive candidates of least importance, so that exactly ``keep`` survive the last step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import GradnasError
from ..genotypes import CellGenotype
from ..spaces import SPACES


@dataclass(frozen=True)
class Subset:
    index: torch.Tensor  # flat (edge · |O| + op) indices of the candidates
    keep: int
    node: int            # the node its candidates enter (DARTS numbering 2..5, NB201 1..3)
    edges: tuple[int, ...]  # the edges it spans, in order



def shrink_steps(rate: float) -> int:
    if not 0.0 < rate <= 1.0:
        raise GradnasError(f"shrink_rate must lie in (0, 1], got {rate}")
    return round(1 / rate)


def shrink_epochs(epochs: int, rate: float, interval: int, window: int | None = None) -> list[int]:
    """The completed epochs (1-based) after which the S steps run: T − S·I + s·I for s = 0..S−1, or with a
    ``window`` W, T − W + s·I (every step inside the last W epochs)."""
    steps = shrink_steps(rate)
    if interval < 0:
        raise GradnasError(f"shrink_interval must be >= 0, got {interval}")
    first = epochs - (steps * interval if window is None else window)
    schedule = [first + s * interval for s in range(steps)]
    if schedule[0] < 1:
        raise GradnasError(f"{steps} shrinking steps every {interval} epochs need more than {epochs} epochs "
                           f"(the first would come after epoch {schedule[0]})")
    if schedule[-1] > epochs:
        raise GradnasError(f"{steps} shrinking steps every {interval} epochs do not fit in the last {window} "
                           f"epochs (the last would come after epoch {schedule[-1]} of {epochs})")
    return schedule


def removal_count(alive: int, keep: int, steps: int, step: int) -> int:
    """n_s = ⌈(alive − keep) / (S − s)⌉."""
    return math.ceil((alive - keep) / (steps - step))


def comparison_subsets(space: str, in_degrees: tuple[int, ...], n_ops: int) -> list[Subset]:
    """The space's subsets (``SearchSpace.shrink``): one per edge, or one per node, each keeping ``keep``."""
    grouping, keep = SPACES[space].shrink.grouping, SPACES[space].shrink.keep
    subsets, edge = [], 0
    for node, degree in enumerate(in_degrees, in_degrees[0]):  # node n has n inputs
        edges = tuple(range(edge, edge + degree))
        groups = [edges] if grouping == "node" else [(e,) for e in edges]
        for group in groups:
            index = torch.arange(group[0] * n_ops, (group[-1] + 1) * n_ops)
            subsets.append(Subset(index, keep, node, group))
        edge += degree
    return subsets


def comparable(space: str, scores: torch.Tensor, op_names: tuple[str, ...]) -> torch.Tensor:
    """``scores`` as subsets compare them: where ``none`` may not survive it ranks below everything."""
    if SPACES[space].shrink.none_survives or "none" not in op_names:
        return scores
    scores = scores.clone()
    scores[:, op_names.index("none")] = float("-inf")
    return scores


def ranked_alive(scores: torch.Tensor, alive: torch.Tensor, subset: Subset, least_first: bool = False) -> torch.Tensor:
    """Flat indices of the subset's alive candidates, most (or ``least_first``: least) important first; equal
    scores keep index order either way."""
    idx = subset.index[alive.flatten()[subset.index]]
    key = scores.flatten()[idx]
    return idx[torch.sort(key if least_first else -key, stable=True).indices]


def shrink(scores: torch.Tensor, alive: torch.Tensor, subsets: list[Subset], steps: int, step: int) -> torch.Tensor:
    """Step ``step`` of ``steps``: the alive mask (E, |O|) with each subset's least important candidates removed.

    ``scores`` is an (E, |O|) importance matrix (higher = keep); NaN scores of alive candidates are refused.
    Among equal scores the candidate first in (edge, op) order goes first, as in the authors' code (a stable
    sort by F, largest first, in DARTS; ``argmax`` of F, the first maximum, in NB201)."""
    new = alive.clone()
    for subset in subsets:
        ranked = ranked_alive(scores, alive, subset, least_first=True)
        if torch.isnan(scores.flatten()[ranked]).any():
            raise ValueError("an alive candidate has no importance score")
        n = removal_count(len(ranked), subset.keep, steps, step)
        if n > 0:
            new.view(-1)[ranked[:n]] = False
    return new


def survivors(scores: torch.Tensor | None, alive: torch.Tensor, subsets: list[Subset]) -> list[list[int]]:
    """Per subset, the flat indices of its ``keep`` best alive candidates (all of them after the last step).

    Without scores the alive candidates are taken in index order."""
    ranked = [ranked_alive(scores if scores is not None else torch.zeros(alive.shape), alive, s) for s in subsets]
    return [r[:s.keep].tolist() for r, s in zip(ranked, subsets)]


def survivor_cell(space: str, chosen: list[list[int]], subsets: list[Subset],
                  op_names: tuple[str, ...]) -> CellGenotype:
    """The cell genotype of the chosen candidates of every subset (``survivors``' output)."""
    n_ops, first_edge, pairs = len(op_names), {}, {}
    for c, s in zip(chosen, subsets):
        first_edge.setdefault(s.node, s.edges[0])  # subsets come in edge order: a node's first is its first edge
        pairs.setdefault(s.node, []).extend((op_names[i % n_ops], i // n_ops - first_edge[s.node]) for i in c)
    nodes = tuple(tuple(p) for p in pairs.values())
    # The space's default output (every node of a concatenating cell: the supernet's concat applies later).
    return CellGenotype(nodes, SPACES[space].cell.output(len(nodes)))
