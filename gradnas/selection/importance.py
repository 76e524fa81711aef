"""IS-DARTS's information-based importance of candidate ops (docs/methods.md §5.1).

The pixels of an op's output are modelled as Gaussian across channels; the statistic is the Fisher term the
authors' code ranks by, ``F = mean φ`` with ``φ = 3·(y − μ)² / s⁶`` (μ, s: mean and unbiased std over the
channels at each pixel). Over the channels it has the closed form ``3(C−1)/C · s⁻⁴``, computed here.
IIM = 1/F: a constant (or zero) map carries no information, F = ∞, IIM = 0; larger F means less important.

Importance measures map a search model to one (E, |O|) matrix per cell, higher = more important, NaN where an
op is not computed (removed by shrinking): ``fisher`` returns IIM, ``alpha`` the architecture weights.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..edges import MixedOp
from ..registry import Registry

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


@IMPORTANCE.register("fisher")
@torch.no_grad()
def information_importance(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                           ) -> list[torch.Tensor]:
    """IIM = 1/F per cell, F averaged over every image of ``batches``, on each active op's raw output (before
    its weight multiplies it), read by the edges' probes during one ordinary forward per batch. Eval mode:
    no dropout, and BN without running statistics still normalises with the batch's."""
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
    iim = torch.where(computed, images / sums, float("nan"))  # 1 / (mean F); F = ∞ gives 0
    none = [i for i, name in enumerate(op_names) if name == "none"]
    iim[:, :, none] = 0.0  # a zero map: F = ∞ (docs/methods.md §5.3), so it is never computed
    return list(iim.unbind(0))


@IMPORTANCE.register("alpha")
@torch.no_grad()
def alpha_importance(model: nn.Module, batches: object = None) -> list[torch.Tensor]:
    """The architecture's op weights (softmax α for DARTS): the S-DARTS ablation ranks by these."""
    return [w.double() for w in model.arch.selection_weights()]
