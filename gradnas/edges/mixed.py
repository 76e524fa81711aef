"""The plain mixed edge of DARTS: f(x) = Σ_o w_o · o(x) (METHODS.md §1.1)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..spaces.ops import ReLUFirst, build_op


class MixedOp(nn.Module):
    """Weighted sum of the candidate ops of one edge.

    Only *active* ops are computed: ``none`` contributes nothing, and ops removed with :meth:`remove`
    (IS-DARTS shrinking) are skipped rather than multiplied by zero. Ops that begin with a ReLU share
    one ReLU of the input.
    """

    def __init__(self, space: str, op_names: tuple[str, ...], C: int, stride: int,
                 affine: bool = False, conv_groups: int = 1):
        super().__init__()
        self.op_names = tuple(op_names)
        self.ops = nn.ModuleList(build_op(space, name, C, stride, affine, conv_groups) for name in op_names)
        self.active = [i for i, name in enumerate(op_names) if name != "none"]
        self.stride = stride

    def remove(self, op_index: int) -> None:
        if op_index in self.active:
            self.active.remove(op_index)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
        """``weights`` holds one scalar per candidate op; returns None when no op is active."""
        out, relu_x = None, None
        w = weights.unbind(0)
        for i in self.active:
            op = self.ops[i]
            if isinstance(op, ReLUFirst):
                relu_x = F.relu(x) if relu_x is None else relu_x
                y = op.body(relu_x)
            else:
                y = op(x)
            out = y * w[i] if out is None else torch.addcmul(out, y, w[i])
        return out
