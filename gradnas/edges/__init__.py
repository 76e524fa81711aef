"""Mixed edges: what one edge computes from its input and its op weights, chosen by name.

Every edge factory has the signature ``(space, op_names, C, stride, affine, **options) -> nn.Module`` and
every edge is called as ``edge(x, op_weights)`` (or ``edge(x, op_weights, group_scale)`` when the
architecture has per-group scales); it returns the edge output, or None when it computes nothing.

The "mixed" factory composes the options of the DARTS family around the plain weighted sum:
partial channels (PC-DARTS) outermost, the weighted sum of ``MixedOp`` innermost.
"""
from __future__ import annotations

import torch.nn as nn

from ..registry import Registry
from .mixed import MixedOp
from .partial import PartialChannelEdge, channel_shuffle

EDGES: Registry = Registry("edge")


@EDGES.register("mixed")
def mixed_edge(space: str, op_names: tuple[str, ...], C: int, stride: int, affine: bool = False,
               partial_k: int = 1, partial_sampling: str = "first") -> nn.Module:
    edge: nn.Module = MixedOp(space, op_names, C // partial_k, stride, affine)
    if partial_k > 1:
        edge = PartialChannelEdge(edge, partial_k, stride, partial_sampling)
    return edge


mixed_edge.options_from_config = lambda config: {  # type: ignore[attr-defined]
    "partial_k": config.partial_k, "partial_sampling": config.partial_sampling}


def build_edge(kind: str, space: str, op_names: tuple[str, ...], C: int, stride: int,
               affine: bool = False, **options) -> nn.Module:
    return EDGES[kind](space, op_names, C, stride, affine, **options)


__all__ = ["EDGES", "MixedOp", "PartialChannelEdge", "build_edge", "channel_shuffle", "mixed_edge"]
