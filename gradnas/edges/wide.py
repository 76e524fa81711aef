"""One candidate op of the E edges that leave one node, computed as one op over E·C channels.

All edges leaving a node see the same input, so the E copies of a parametric candidate become one wide
computation: a dense conv on the shared input with the E edges' filters stacked (E·C outputs), a depthwise
conv on the input repeated E times, a pointwise conv with groups = E, one BN over E·C channels. Parameter-free
candidates (pools, skip) are computed once and shared. Parameters stay in the per-edge modules; the wide
weight is their concatenation, one ``torch.cat`` per forward whose backward hands each parameter a view.

BN running statistics stay exactly per edge: the per-edge buffers are made views into one wide buffer
(:class:`WideBatchNorm`), re-made whenever a buffer was replaced (``.to(device)`` and the like), so the wide
BN updates every edge's own statistics in place. Their ``num_batches_tracked`` are views into one counter per
cell (:class:`BatchCounter`), incremented once per training forward.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..spaces.ops import FactorizedReduce, PoolBN, ReLUFirst, _concat_groupwise
from .partial import memory_format_of

POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def repeat_channels(x: torch.Tensor, times: int) -> torch.Tensor:
    """(N, C, H, W) → (N, times·C, H, W), channel block e a copy of x; one copy, in x's memory format."""
    N, C, H, W = x.shape
    if memory_format_of(x) == torch.channels_last:
        nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(N, H, W, times, C)
        return nhwc.reshape(N, H, W, times * C).permute(0, 3, 1, 2)
    return x.unsqueeze(1).expand(N, times, C, H, W).reshape(N, times * C, H, W)


def _plain_bn(m: nn.Module) -> bool:
    return type(m) is nn.BatchNorm2d and m.momentum is not None


def _plain_conv(m: nn.Module) -> bool:
    """A bias-free zero-padded conv, dense or depthwise: the kinds a wide conv can stack."""
    depthwise = m.groups == m.in_channels == m.out_channels
    return (type(m) is nn.Conv2d and m.bias is None and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and (m.groups == 1 or depthwise))


def wide_kind(op: nn.Module) -> str:
    """How the executor computes this candidate for many edges at once."""
    if isinstance(op, nn.Identity):
        return "identity"
    if isinstance(op, POOLS):
        return "pool"
    if isinstance(op, PoolBN) and isinstance(op[0], POOLS) and _plain_bn(op[1]) and len(op) == 2:
        return "pool_bn"
    if type(op) is FactorizedReduce and op.groups == 1 and _plain_conv(op.conv_1) and _plain_bn(op.bn):
        return "reduce"
    if isinstance(op, ReLUFirst) and isinstance(op.body, nn.Sequential) and _sequence_fits(op.body):
        return "body"
    return "generic"


def _sequence_fits(body: nn.Sequential) -> bool:
    wide = False
    for layer in body:
        if isinstance(layer, nn.Conv2d):
            if not _plain_conv(layer):
                return False
            wide = True
        elif _plain_bn(layer):
            if not wide:  # a BN on the shared input would need the input repeated first
                return False
        elif type(layer) is not nn.ReLU:
            return False
    return wide


def bns_of(op: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in op.modules() if isinstance(m, nn.BatchNorm2d)]


def convs_of(op: nn.Module) -> list[nn.Conv2d]:
    return [m for m in op.modules() if isinstance(m, nn.Conv2d)]


class BatchCounter:
    """The ``num_batches_tracked`` of many BNs as views into one counter, so one ``add_`` counts them all."""

    def __init__(self, bns: Sequence[nn.BatchNorm2d]):
        self.bns = [bn for bn in bns if bn.num_batches_tracked is not None]
        self.counts: torch.Tensor | None = None
        self.views: list[torch.Tensor] = []

    def step(self) -> None:
        if not self.bns:
            return
        if self.counts is None or any(bn._buffers["num_batches_tracked"] is not v
                                      for bn, v in zip(self.bns, self.views)):
            with torch.no_grad():
                self.counts = torch.stack([bn.num_batches_tracked for bn in self.bns])
            self.views = list(self.counts.unbind(0))
            for bn, v in zip(self.bns, self.views):
                bn._buffers["num_batches_tracked"] = v
        self.counts.add_(1)


class WideBatchNorm:
    """The BNs of E edges (same width, eps, momentum, affinity) as one BN over E·C channels.

    Mirrors ``nn.BatchNorm2d.forward``, except that ``num_batches_tracked`` is left to a :class:`BatchCounter`.
    """

    def __init__(self, bns: Sequence[nn.BatchNorm2d]):
        self.bns = list(bns)
        first = self.bns[0]
        if any((bn.eps, bn.momentum, bn.affine, bn.track_running_stats, bn.num_features)
               != (first.eps, first.momentum, first.affine, first.track_running_stats, first.num_features)
               for bn in self.bns):
            raise ValueError("the BNs of one wide BN must agree in width, eps, momentum and affinity")
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def _aliased(self) -> bool:
        if self.mean is None:
            return False
        C = self.bns[0].num_features
        return all(bn._buffers["running_mean"] is not None and bn.running_mean._base is self.mean
                   and bn.running_var._base is self.var and bn.running_mean.storage_offset() == e * C
                   for e, bn in enumerate(self.bns))

    def _alias(self) -> None:
        """Make the edges' running buffers views into one wide buffer (their values kept)."""
        with torch.no_grad():
            self.mean = torch.cat([bn.running_mean for bn in self.bns])
            self.var = torch.cat([bn.running_var for bn in self.bns])
        C = self.bns[0].num_features
        for bn, mean, var in zip(self.bns, self.mean.split(C), self.var.split(C)):
            bn._buffers["running_mean"], bn._buffers["running_var"] = mean, var

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        first = self.bns[0]
        tracked = first.running_mean is not None
        if tracked and not self._aliased():
            self._alias()
        weight = bias = None
        if first.affine:
            weight = torch.cat([bn.weight for bn in self.bns])
            bias = torch.cat([bn.bias for bn in self.bns])
        use_batch = training or not tracked
        stats = tracked and (not training or first.track_running_stats)
        return F.batch_norm(x, self.mean if stats else None, self.var if stats else None, weight, bias, use_batch,
                            first.momentum if training and first.track_running_stats else 0.0, first.eps)
