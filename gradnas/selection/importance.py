"""IS-DARTS's information-based importance of candidate ops (docs/methods.md §5.1).

The pixels of an op's output are modelled as Gaussian across channels; the statistic is the Fisher term the
authors' code ranks by, ``F = mean φ`` with ``φ = 3·(y − μ)² / s⁶`` (μ, s: mean and unbiased std over the
channels at each pixel). Over the channels it has the closed form ``3(C−1)/C · s⁻⁴``, computed here.
IIM = 1/F: a constant (or zero) map carries no information, F = ∞, IIM = 0; larger F means less important.

An importance measure collects, per cell, (E, |O|) totals of its statistic and how many samples they sum, NaN
where an op is not computed (removed by shrinking); the cells sharing a mask are averaged by adding both, so
data-parallel ranks combine them exactly. ``fisher`` sums F over images and removes the largest mean F, as the
authors' code does (``shrink_metric.get_iim``: the mean over cells of each cell's mean F), reporting IIM = 1/F̄;
``alpha`` takes the architecture weights (one sample per cell) and removes the smallest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..edges import MixedOp
from ..registry import Registry

Totals = tuple[torch.Tensor, torch.Tensor]  # (L, E, |O|) sums of the statistic, (L,) samples summed


@dataclass(frozen=True)
class Measure:
    collect: Callable[[nn.Module, Iterable | None], Totals]
    largest_removed: bool  # True: a larger statistic means a less important op (F); False: α
    label: str             # what the importance plot shows

    def importance(self, stat: torch.Tensor) -> torch.Tensor:
        """The importance of a mean statistic, higher = more important: 1/F̄ (IIM) or α itself."""
        return 1 / stat if self.largest_removed else stat

    def rank_key(self, stat: torch.Tensor) -> torch.Tensor:
        """What shrinking ranks, higher = kept; F̄ itself, negated, so no rounding of 1/F̄ can reorder it."""
        return -stat if self.largest_removed else stat


IMPORTANCE: Registry = Registry("importance measure")


def fisher_information(y: torch.Tensor) -> torch.Tensor:
    """Per-sample Fisher term F_b of a (B, C, H, W) feature map, in float64: 3(C−1)/C · mean_{h,w} s⁻⁴.

    s is the unbiased std over channels; where it is 0 (a constant pixel) the term is +∞, as the
    element-wise form's 0/0 is taken to be."""
    C = y.shape[1]
    if C < 2:
        raise ValueError("the Fisher term needs at least 2 channels")
    y = y.float()
    # Unbiased variance over channels, (B, H, W); two explicit passes run many times faster than torch.var here.
    var = (y - y.mean(1, keepdim=True)).square_().sum(1).div_(C - 1)
    return 3 * (C - 1) / C * var.double().pow(-2).flatten(1).mean(1)


def mixed_op(edge: nn.Module) -> MixedOp:
    """The plain mixed op inside an edge (the edge itself, or the one a wrapper holds)."""
    return next(m for m in edge.modules() if isinstance(m, MixedOp))


@torch.no_grad()
def fisher_totals(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Totals:
    """Per cell, Σ F_b over every image of ``batches`` of each active op's raw output (before its weight
    multiplies it), read by the edges' probes during one ordinary forward per batch, and the image count.
    Eval mode: no dropout; BN without running statistics still normalises with the batch's."""
    cells, op_names = model.net.cells, model.net.op_names
    device = next(model.parameters()).device
    sums = torch.zeros(len(cells), len(cells[0].edges), len(op_names), dtype=torch.float64, device=device)
    edges = [(c, e, mixed_op(edge)) for c, cell in enumerate(cells) for e, edge in enumerate(cell.edges)]

    def probe(cell: int, edge: int) -> Callable[[int, torch.Tensor], None]:
        def record(op: int, y: torch.Tensor) -> None:
            sums[cell, edge, op] += fisher_information(y).sum()
        return record

    for c, e, op in edges:
        op.probe = probe(c, e)
    was_training, images = model.training, 0
    model.eval()
    try:
        for x, _ in batches:
            model(x)
            images += x.shape[0]
    finally:
        for _, _, op in edges:
            op.probe = None
        model.train(was_training)
    if not images:
        raise ValueError("no images to measure importance on")
    computed = torch.zeros_like(sums, dtype=torch.bool)
    for c, e, op in edges:
        computed[c, e, op.active] = True
    sums = sums.masked_fill(~computed, float("nan"))
    none = [i for i, name in enumerate(op_names) if name == "none"]
    sums[:, :, none] = float("inf")  # a zero map: F = ∞ (docs/methods.md §5.3), so it is never computed
    return sums, sums.new_full((len(cells),), images)


@torch.no_grad()
def alpha_totals(model: nn.Module, batches: object = None) -> Totals:
    """The architecture's op weights (softmax α for DARTS), one sample per cell: S-DARTS ranks by these."""
    weights = torch.stack(model.arch.selection_weights()).double()
    return weights, weights.new_ones(len(weights))


def mean_per_type(totals: Totals, cell_types: list[str]) -> dict[str, torch.Tensor]:
    """The mean statistic of every cell type: its cells' sums over their sample counts."""
    sums, counts, means = *totals, {}
    for t in dict.fromkeys(cell_types):
        idx = [i for i, k in enumerate(cell_types) if k == t]
        means[t] = sums[idx].sum(0) / counts[idx].sum()
    return means


IMPORTANCE.register("fisher")(Measure(fisher_totals, largest_removed=True, label="IIM = 1/F"))
IMPORTANCE.register("alpha")(Measure(alpha_totals, largest_removed=False, label="alpha weight"))
