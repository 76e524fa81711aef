"""The plain mixed edge of DARTS: f(x) = Σ_o w_o · o(x) (docs/methods.md §1.1)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..spaces.ops import ReLUFirst, build_op


class MixedOp(nn.Module):
    """Weighted sum of the candidate ops of one edge.

    Only *active* ops are computed: ``none`` contributes nothing, and ops removed with :meth:`remove`
    (IS-DARTS shrinking) are skipped rather than multiplied by zero; an edge whose only op left is ``none``
    (an NB201 cell may keep one) outputs its zero map, so a node fed only by such edges is zero. Ops that
    begin with a ReLU share one ReLU of the input. ``skip_dropout`` > 0 applies dropout to the skip_connect
    branch in training mode (DNAS's skip-connect drop, docs/methods.md §6 [interp]).
    """

    def __init__(self, space: str, op_names: tuple[str, ...], C: int, stride: int,
                 affine: bool = False, conv_groups: int = 1, skip_dropout: float = 0.0, pool_bn: bool = True):
        super().__init__()
        self.op_names = tuple(op_names)
        self.ops = nn.ModuleList(build_op(space, name, C, stride, affine, conv_groups, pool_bn)
                                 for name in op_names)
        self.active = [i for i, name in enumerate(op_names) if name != "none"]
        self.zero = self.op_names.index("none") if "none" in self.op_names else -1  # -1: none absent or removed
        self.stride = stride
        self.skip_dropout = skip_dropout
        self.dropped = op_names.index("skip_connect") if skip_dropout > 0 and "skip_connect" in op_names else -1
        # Set while importance is measured (IS-DARTS): called with each computed op's raw, unweighted output.
        self.probe: Callable[[int, torch.Tensor], None] | None = None

    def remove(self, op_index: int) -> None:
        if op_index == self.zero:
            self.zero = -1
        elif op_index in self.active:
            self.active.remove(op_index)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, sampled: int | None = None) -> torch.Tensor | None:
        """``weights[o]`` is op o's weight: a scalar, or a tensor that broadcasts against the op's output
        (per-sample or per-channel weights, as group attention makes them); None when no op is left at all.
        ``sampled`` (GDAS): compute that op only; the others' weights, zero in value, are added as they are, so
        their straight-through gradient (the sum of the output's gradient) reaches α, as in the authors' cell."""
        w = weights.unbind(0)
        if sampled is not None:
            y = self.ops[sampled](x)
            if sampled == self.dropped and self.training:
                y = F.dropout(y, self.skip_dropout)
            return torch.addcmul(weights.sum(0) - w[sampled], y, w[sampled])
        out, relu_x = None, None
        for i in self.active:
            op = self.ops[i]
            if isinstance(op, ReLUFirst):
                relu_x = F.relu(x) if relu_x is None else relu_x
                y = op.body(relu_x)
            else:
                y = op(x)
            if self.probe is not None:
                self.probe(i, y)
            if i == self.dropped and self.training:
                y = F.dropout(y, self.skip_dropout)
            out = y * w[i] if out is None else torch.addcmul(out, y, w[i])
        if out is None and self.zero >= 0:
            return self.ops[self.zero](x)
        return out
