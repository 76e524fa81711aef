"""Mixed edges: what one edge computes from its input and its op weights, chosen by name.

Every edge factory has the signature ``(space, op_names, C, stride, affine, **options) -> nn.Module`` and
every edge is called as ``edge(x, op_weights)`` (or ``edge(x, op_weights, group_scale)`` when the
architecture has per-group scales); it returns the edge output or None when it computes nothing.
"""
from __future__ import annotations

import torch.nn as nn

from ..registry import Registry
from .mixed import MixedOp

EDGES: Registry = Registry("edge")
EDGES.register("mixed")(MixedOp)


def build_edge(kind: str, space: str, op_names: tuple[str, ...], C: int, stride: int,
               affine: bool = False, **options) -> nn.Module:
    return EDGES[kind](space, op_names, C, stride, affine, **options)


__all__ = ["EDGES", "MixedOp", "build_edge"]
