"""Candidate operations of the DARTS and NAS-Bench-201 spaces (docs/methods.md §1.1, §1.2).

``OPS[space]`` is the registry of a space's ops; an op registered there (also from a user's own module)
can be searched (``SearchConfig.ops``), stored in genotypes and trained. ``DARTS_OPS`` and ``NB201_OPS``
are the op sets searched by default. Every op maps C → C channels with stride 1 or 2 and is built by
``OPS[space][name](C, stride, affine, conv_groups)``; ``build_op(..., pool_bn=False)`` drops the BN that follows
the DARTS space's pools in the supernet (IS-DARTS's supernet).
Convolutions are bias-free. ``conv_groups`` groups the pointwise convs inside candidate ops (the
G-DARTS-A grouped-convolution variant, docs/methods.md §4); depthwise convs and cell preprocessing keep theirs.

Ops that start with a ReLU subclass :class:`ReLUFirst`, so a mixed edge can apply that ReLU once for all
of its candidates instead of once per op (same result, fewer kernels and saved tensors).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import Registry

DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

OPS: dict[str, Registry] = {"darts": Registry("DARTS op"), "nb201": Registry("NB201 op")}


def build_op(space: str, name: str, C: int, stride: int, affine: bool, conv_groups: int = 1,
             pool_bn: bool = True) -> nn.Module:
    op = OPS[space][name](C, stride, affine, conv_groups)
    return op[0] if isinstance(op, PoolBN) and not pool_bn else op


def check_op_shape(space: str, name: str, strides: tuple[int, ...] = (1, 2)) -> None:
    """Build op ``name`` of a user's and run it on a small batch at each stride: an output of another shape would
    otherwise be broadcast into the mixed edge's sum and searched. One line naming the op when it is wrong."""
    from ..errors import GradnasError, first_line

    C, side = 4, 8
    for stride in strides:
        want = (2, C, side // stride, side // stride)
        try:
            with torch.no_grad():
                got = tuple(OPS[space][name](C, stride, True, 1)(torch.rand(2, C, side, side)).shape)
        except Exception as err:  # the user's code: any failure is theirs to see, in one line
            raise GradnasError(f"op {name!r} fails on a 2×{C}×{side}×{side} input at stride {stride}: "
                               f"{type(err).__name__}: {first_line(err)}") from None
        if got != want:
            raise GradnasError(f"op {name!r} maps a 2×{C}×{side}×{side} input at stride {stride} to "
                               f"{'×'.join(map(str, got))}; ops must map C to C channels at the given stride "
                               f"({'×'.join(map(str, want))})")


class ReLUFirst(nn.Module):
    """An op of the form ``body(relu(x))``; ``body`` is exposed so a shared ReLU can feed it."""

    body: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class ReLUConvBN(ReLUFirst):
    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool, groups: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(C_in, C_out, kernel, stride, padding, bias=False, groups=groups),
            nn.BatchNorm2d(C_out, affine=affine))


def _dw_pw(C: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool, groups: int) -> list[nn.Module]:
    """Depthwise k×k then pointwise 1×1 then BN: the unit of sep and dil convs."""
    return [nn.Conv2d(C, C, kernel, stride, padding, dilation=dilation, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False, groups=groups),
            nn.BatchNorm2d(C, affine=affine)]


class DilConv(ReLUFirst):
    def __init__(self, C: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool, groups: int = 1):
        super().__init__()
        self.body = nn.Sequential(*_dw_pw(C, kernel, stride, padding, dilation, affine, groups))


class SepConv(ReLUFirst):
    """[ReLU → depthwise → 1×1 → BN] twice; only the first unit is strided."""

    def __init__(self, C: int, kernel: int, stride: int, padding: int, affine: bool, groups: int = 1):
        super().__init__()
        self.body = nn.Sequential(*_dw_pw(C, kernel, stride, padding, 1, affine, groups), nn.ReLU(),
                                  *_dw_pw(C, kernel, 1, padding, 1, affine, groups))


class Conv7x1x7(ReLUFirst):
    """A 1×7 then a 7×1 conv (each strided along its own axis), then BN: AmoebaNet's factorised 7×7."""

    def __init__(self, C: int, stride: int, affine: bool, groups: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(C, C, (1, 7), (1, stride), (0, 3), bias=False, groups=groups),
                                  nn.Conv2d(C, C, (7, 1), (stride, 1), (3, 0), bias=False, groups=groups),
                                  nn.BatchNorm2d(C, affine=affine))


class FactorizedReduce(ReLUFirst):
    """Halve the resolution with two offset 1×1 stride-2 convs whose outputs are concatenated."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True, groups: int = 1):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output width, got {C_out}")
        # A 1×1 stride-2 conv is a 1×1 conv of every second pixel; subsampling first computes the same thing
        # and avoids oneDNN's channels-last stride-2 1×1 backward, which corrupts the heap at small widths on
        # one thread (torch 2.13 CPU, tests/test_ops.py).
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, bias=False, groups=groups)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)
        self.groups = groups

    def body(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv_1(x[:, :, ::2, ::2]), self.conv_2(x[:, :, 1::2, 1::2])
        if self.groups == 1:
            return self.bn(torch.cat([a, b], dim=1))
        return self.bn(_concat_groupwise(a, b, self.groups))


def _concat_groupwise(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """Concatenate channels group by group ([a_1, b_1, …, a_g, b_g]), so that a grouped FactorizedReduce maps
    input group m to output group m only (docs/methods.md §4: groups stay separate). One copy, as a plain
    concatenation, in the inputs' memory format."""
    if a.is_contiguous():
        return torch.cat([a.unflatten(1, (groups, -1)), b.unflatten(1, (groups, -1))], 2).flatten(1, 2)
    nhwc = [t.permute(0, 2, 3, 1).unflatten(3, (groups, -1)) for t in (a, b)]  # channels-last in memory
    return torch.cat(nhwc, 4).flatten(3).permute(0, 3, 1, 2)


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x[:, :, ::self.stride, ::self.stride].shape)


class PoolBN(nn.Sequential):
    """A supernet pool followed by its non-affine BN (quark0's DARTS supernet); ``build_op(..., pool_bn=False)``
    keeps the pool alone, as the IS-DARTS supernet (its xautodl POOLING: no BN when C_in = C_out) has it."""


def _pool(kind: str, C: int, stride: int, affine: bool, with_bn: bool) -> nn.Module:
    pool = (nn.MaxPool2d(3, stride, 1) if kind == "max"
            else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
    # Evaluation nets (affine=True) have no BN after their pools.
    return PoolBN(pool, nn.BatchNorm2d(C, affine=False)) if with_bn and not affine else pool


_darts, _nb201 = OPS["darts"].register, OPS["nb201"].register

_darts("none")(lambda C, s, affine, g: Zero(s))
_darts("max_pool_3x3")(lambda C, s, affine, g: _pool("max", C, s, affine, with_bn=True))
_darts("avg_pool_3x3")(lambda C, s, affine, g: _pool("avg", C, s, affine, with_bn=True))
_darts("skip_connect")(lambda C, s, affine, g: nn.Identity() if s == 1 else FactorizedReduce(C, C, affine, g))
_darts("sep_conv_3x3")(lambda C, s, affine, g: SepConv(C, 3, s, 1, affine, g))
_darts("sep_conv_5x5")(lambda C, s, affine, g: SepConv(C, 5, s, 2, affine, g))
_darts("dil_conv_3x3")(lambda C, s, affine, g: DilConv(C, 3, s, 2, 2, affine, g))
_darts("dil_conv_5x5")(lambda C, s, affine, g: DilConv(C, 5, s, 4, 2, affine, g))
# Not searched by DARTS (DARTS_OPS), but in its op table for the NASNet and AmoebaNet genotypes.
_darts("sep_conv_7x7")(lambda C, s, affine, g: SepConv(C, 7, s, 3, affine, g))
_darts("conv_7x1_1x7")(lambda C, s, affine, g: Conv7x1x7(C, s, affine, g))

_nb201("none")(lambda C, s, affine, g: Zero(s))
_nb201("skip_connect")(lambda C, s, affine, g: nn.Identity() if s == 1 else FactorizedReduce(C, C, affine, g))
_nb201("nor_conv_1x1")(lambda C, s, affine, g: ReLUConvBN(C, C, 1, s, 0, affine, g))
_nb201("nor_conv_3x3")(lambda C, s, affine, g: ReLUConvBN(C, C, 3, s, 1, affine, g))
_nb201("avg_pool_3x3")(lambda C, s, affine, g: _pool("avg", C, s, affine, with_bn=False))
