"""Mixed edges: what one edge computes from its input and its op weights, chosen by name.

Every edge factory has the signature ``(space, op_names, C, stride, affine, **options) -> nn.Module`` and
every edge is called as ``edge(x, op_weights)`` (or ``edge(x, op_weights, group_scale)`` when the
architecture has per-group scales); it returns the edge output, or None when it computes nothing. The
option ``pool_bn`` comes from the space (a BN after the DARTS space's pools, see ``spaces.ops``).

The "mixed" factory composes the options of the DARTS family around the plain weighted sum:
partial channels (PC-DARTS) outermost, channel groups (G-DARTS-A) inside, the weighted sum of ``MixedOp``
innermost.
"""
from __future__ import annotations

import torch.nn as nn

from ..options import Option, declare
from ..registry import Registry
from .groups import GROUP_MODES, ChannelGroupEdge
from .mixed import MixedOp
from .partial import PartialChannelEdge, channel_shuffle

EDGES: Registry = Registry("edge")


@EDGES.register("mixed")
def mixed_edge(space: str, op_names: tuple[str, ...], C: int, stride: int, affine: bool = False,
               partial_k: int = 1, partial_sampling: str = "first", skip_dropout: float = 0.0,
               groups: int = 1, group_mode: str = "exact", conv_groups: int = 1,
               group_attention: bool = False, pool_bn: bool = True) -> nn.Module:
    if group_mode not in GROUP_MODES:
        raise ValueError(f"group mode must be one of {GROUP_MODES}, got {group_mode!r}")
    width = C if partial_sampling == "all" else C // partial_k  # channels that reach the ops
    fold = group_mode == "exact"  # all groups through one op built for width/M channels
    edge: nn.Module = MixedOp(space, op_names, width // groups if fold else width, stride, affine,
                              conv_groups=conv_groups, skip_dropout=skip_dropout, pool_bn=pool_bn)
    if (fold and groups > 1) or group_attention:
        edge = ChannelGroupEdge(edge, groups, fold)
    if partial_k > 1:
        edge = PartialChannelEdge(edge, partial_k, stride, partial_sampling)
    return edge


mixed_edge.options_from_config = lambda config: {  # type: ignore[attr-defined]
    "partial_k": config.partial_k, "partial_sampling": config.partial_sampling, "skip_dropout": config.skip_dropout,
    "groups": config.groups, "group_mode": config.group_mode, "conv_groups": config.conv_groups,
    "group_attention": config.group_attention}


def build_edge(kind: str, space: str, op_names: tuple[str, ...], C: int, stride: int,
               affine: bool = False, **options) -> nn.Module:
    return EDGES[kind](space, op_names, C, stride, affine, **options)


__all__ = ["EDGES", "ChannelGroupEdge", "MixedOp", "PartialChannelEdge", "build_edge", "channel_shuffle", "mixed_edge"]


declare(
    "edge",
    Option("edge", str, 'mixed', 'mixed-edge kind: {choices}', choices=EDGES.names),
    Option("partial_k", int, 1, "PC-DARTS: 1/K of each edge's channels go through the ops (1: all)"),
    Option("partial_sampling", str, 'first',
           'PC-DARTS channels through the ops: first (code), random (paper) or all (G-PC-DARTS-A)'),
    Option("skip_dropout", float, 0.0, 'DNAS: dropout on the skip_connect branch during search (DNAS 0.2; 0: off)'),
    Option("groups", int, 1, 'G-DARTS-A: channel groups M of every edge'),
    Option("group_mode", str, 'exact',
           'G-DARTS-A: exact (all groups through one shared op built for C/M channels) or split (a full-width op whose output is split into groups for attention)'),
    Option("conv_groups", int, 1, 'G-DARTS-A: groups g of every conv inside the candidate ops'),
    Option("executor", str, "per-edge",
           "per-edge (reference) or batched: all edges leaving a node computed together, same results "
           "(compile, GDAS, and random partial channels with channel groups, fall back to per-edge)"),
)
