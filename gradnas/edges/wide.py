"""One candidate op of the E edges that leave one node, computed as one op over E·C channels.

All edges leaving a node see the same input, so the E copies of a parametric candidate become one wide
computation: a dense conv on the shared input with the E edges' filters stacked (E·C outputs), a depthwise or
grouped conv (g groups) on the input repeated E times with E·g groups, a pointwise conv with groups = E·g, one BN
over E·C channels. Parameter-free
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
from torch.autograd.function import once_differentiable

from ..capture import not_capturing
from ..distributed import SyncBatchNorm2d, spans_ranks, synced_batch_norm
from ..spaces.ops import FactorizedReduce, PoolBN, ReLUFirst
from .partial import memory_format_of

POOLS = (nn.MaxPool2d, nn.AvgPool2d)
BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, SyncBatchNorm2d)  # the synced ones as sync_bn converts them


def repeat_channels(x: torch.Tensor, times: int) -> torch.Tensor:
    """(N, C, H, W) → (N, times·C, H, W), channel block e a copy of x; one copy, in x's memory format."""
    N, C, H, W = x.shape
    if memory_format_of(x) == torch.channels_last:
        nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(N, H, W, times, C)
        return nhwc.reshape(N, H, W, times * C).permute(0, 3, 1, 2)
    return x.unsqueeze(1).expand(N, times, C, H, W).reshape(N, times * C, H, W)


def conv(x: torch.Tensor, weight: torch.Tensor, layer: nn.Conv2d, groups: int) -> torch.Tensor:
    """``layer``'s convolution of x with ``weight`` in ``groups`` groups, in the form fastest on x's device.

    On the CPU, oneDNN's backward of a dilated depthwise conv is slow, and the undilated form below runs
    several times faster (bench/wide_convs.py: "wide" against "wide-cpu"). A "same"-padded conv of
    dilation d computes the same sums as an undilated one over the d² pixel phases of its input (every d-th
    pixel from offset (a, b)); a stride-d one reads phase (0, 0) only. So those convs run undilated there, the
    stride-1 ones in the forward as they are and with their backward by fast kernels (:class:`_PhasedDepthwise`).
    A grouped 1×1 conv takes its filters' gradient from one batched matrix product (:func:`pointwise`).
    """
    (kh, kw), (d, dw), stride = weight.shape[2:], layer.dilation, layer.stride
    C, H, W = x.shape[1:]
    if (kh, kw) == (1, 1) and stride == (1, 1) and layer.padding == (0, 0):
        return pointwise(x, weight, groups)
    if (not eager_cpu(x) or d == 1 or dw != d or groups != C or weight.shape[0] != C
            or layer.padding != (d * (kh - 1) // 2, d * (kw - 1) // 2) or kh % 2 == 0 or kw % 2 == 0):
        return F.conv2d(x, weight, None, stride, layer.padding, layer.dilation, groups)
    if stride == (d, d):
        return F.conv2d(subsample(x, 0, d), weight, None, 1, ((kh - 1) // 2, (kw - 1) // 2), 1, groups)
    if stride == (1, 1) and H % d == 0 and W % d == 0:
        return _PhasedDepthwise.apply(x, weight, layer.padding, d)
    return F.conv2d(x, weight, None, stride, layer.padding, layer.dilation, groups)


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether x's ops run eagerly on the CPU, where the forms below beat oneDNN's kernels; a compiled graph takes
    the plain ops, whose backward the compiler derives and lays out itself."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def pointwise(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The bias-free 1×1 conv of x with ``weight`` in ``groups`` groups. On the CPU, for a channels-last x and
    groups of several channels, oneDNN's filter gradient of a grouped 1×1 conv is slower than one ``bmm`` over
    the groups' (pixels, channels) views (1.3–1.75× in bench/cpu_kernels.py), so it is taken from that
    (:class:`_GroupedPointwise`)."""
    if eager_cpu(x) and 1 < groups < x.shape[1] and memory_format_of(x) == torch.channels_last:
        return _GroupedPointwise.apply(x, weight, groups)
    return F.conv2d(x, weight, None, 1, 0, 1, groups)


def subsample(x: torch.Tensor, offset: int, step: int) -> torch.Tensor:
    """x[:, :, offset::step, offset::step], whose gradient is laid out as x is: autograd's own (two slice
    backwards) is contiguous, and adding it to a channels-last gradient of the same tensor is several times
    slower than adding two of one layout."""
    if memory_format_of(x) != torch.channels_last or torch.compiler.is_compiling():
        return x[:, :, offset::step, offset::step]
    return _Subsample.apply(x, offset, step)


class _Subsample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, offset, step):
        ctx.shape, ctx.offset, ctx.step = x.shape, offset, step
        return x[:, :, offset::step, offset::step]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (N, C, H, W), o, s = ctx.shape, ctx.offset, ctx.step
        grad_x = grad.new_zeros((N, H, W, C)).permute(0, 3, 1, 2)  # channels-last
        grad_x[:, :, o::s, o::s] = grad
        return grad_x, None, None


class _GroupedPointwise(torch.autograd.Function):
    """A grouped 1×1 conv on a channels-last input; its filters' gradient is one ``bmm`` over the groups:
    (G, C_out/G, pixels) × (G, pixels, C_in/G), both strided views of the gradient and the input."""

    @staticmethod
    def forward(ctx, x, weight, groups):
        ctx.save_for_backward(x, weight)
        ctx.groups = groups
        return F.conv2d(x, weight, None, 1, 0, 1, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        G = ctx.groups
        # under autocast the forward's conv ran in the gradient's dtype; the backward runs outside autocast
        x_, weight_ = x.to(grad.dtype), weight.to(grad.dtype)
        grad_x = grad_w = None
        if needs_grad(ctx, 0, x):
            grad_x = torch.ops.aten.convolution_backward(grad, x_, weight_, None, [1, 1], [0, 0], [1, 1], False,
                                                         [0, 0], G, [True, False, False])[0].to(x.dtype)
        if needs_grad(ctx, 1, weight):
            N, _, H, W = x.shape
            rows = lambda t: t.permute(0, 2, 3, 1).reshape(N * H * W, G, -1)  # views for channels-last tensors
            grad_w = torch.bmm(rows(grad).permute(1, 2, 0), rows(x_).transpose(0, 1)).view(weight.shape)
            grad_w = grad_w.to(weight.dtype)
        return grad_x, grad_w, None


def _phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """(N, C, H, W) → (d²·N, C, H/d, W/d) channels-last: image (a·d + b)·N + n is pixels (a::d, b::d) of image n."""
    N, C, H, W = x.shape
    split = x.permute(0, 2, 3, 1).reshape(N, H // d, d, W // d, d, C).permute(2, 4, 0, 1, 3, 5)
    return split.reshape(d * d * N, H // d, W // d, C).permute(0, 3, 1, 2)  # one copy


def needs_grad(ctx, i: int, t: torch.Tensor) -> bool:
    """Whether this backward pass wants the gradient of a custom Function's input i (the tensor t): unlike a
    built-in op's, a custom Function's backward is not told, and ``ctx.needs_input_grad`` only says that t
    requires grad (the weight step takes no architecture gradients, the architecture step no weight gradients)."""
    return ctx.needs_input_grad[i] and (t.grad_fn is None or _will_execute is None or _will_execute(t.grad_fn))


# The engine's answer is a private hook of PyTorch's (torch.autograd.graph uses it); without it every gradient
# is computed, which is correct, only slower.
_will_execute = getattr(torch._C, "_will_engine_execute_node", None)


class _PhasedDepthwise(torch.autograd.Function):
    """A stride-1 "same" depthwise conv of dilation d; its backward by fast kernels: the input gradient as the
    conv of the output gradient with the flipped filters, the weight gradient as the undilated conv's over the
    d² phases of input and output gradient."""

    @staticmethod
    def forward(ctx, x, weight, padding, d):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.d = padding, d
        return F.conv2d(x, weight, None, 1, padding, d, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        d, C, (kh, kw) = ctx.d, weight.shape[0], weight.shape[2:]
        # under autocast the forward's conv ran in the gradient's dtype; the backward runs outside autocast
        x_, weight_ = x.to(grad.dtype), weight.to(grad.dtype)
        grad_x = grad_w = None
        if needs_grad(ctx, 0, x):
            grad_x = F.conv2d(grad, weight_.flip(2, 3), None, 1, ctx.padding, d, C).to(x.dtype)
        if needs_grad(ctx, 1, weight):
            ph, pw = (kh - 1) // 2, (kw - 1) // 2
            phases = _phases(x_, d)
            if kh > phases.shape[2] or kw > phases.shape[3]:
                # a filter wider than the phase images (5×5 on 4×4) takes oneDNN's slow path unless the
                # padding is explicit (3.4× faster in bench/cpu_kernels.py)
                phases, ph, pw = F.pad(phases, (pw, pw, ph, ph)), 0, 0
            grad_w = torch.ops.aten.convolution_backward(
                _phases(grad, d), phases, weight_, None, [1, 1], [ph, pw], [1, 1], False, [0, 0], C,
                [False, True, False])[1].to(weight.dtype)
        return grad_x, grad_w, None, None


def _plain_bn(m: nn.Module) -> bool:
    return type(m) in BATCH_NORMS and m.momentum is not None


def _plain_conv(m: nn.Module) -> bool:
    """A bias-free zero-padded conv (dense, grouped or depthwise): the kind a wide conv can stack."""
    return type(m) is nn.Conv2d and m.bias is None and m.padding_mode == "zeros" and isinstance(m.padding, tuple)


def wide_kind(op: nn.Module) -> str:
    """How the executor computes this candidate for many edges at once."""
    if isinstance(op, nn.Identity):
        return "identity"
    if isinstance(op, POOLS):
        return "pool"
    if isinstance(op, PoolBN) and isinstance(op[0], POOLS) and _plain_bn(op[1]) and len(op) == 2:
        return "pool_bn"
    if type(op) is FactorizedReduce and _plain_conv(op.conv_1) and _plain_bn(op.bn):
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
    return [m for m in op.modules() if isinstance(m, BATCH_NORMS)]


def convs_of(op: nn.Module) -> list[nn.Conv2d]:
    return [m for m in op.modules() if isinstance(m, nn.Conv2d)]


class BatchCounter:
    """The ``num_batches_tracked`` of many BNs as views into one counter, so one ``add_`` counts them all."""

    def __init__(self, bns: Sequence[nn.BatchNorm2d]):
        self.bns = [bn for bn in bns if bn.num_batches_tracked is not None]
        self.counts: torch.Tensor | None = None
        self.views: list[torch.Tensor] = []

    def alias(self) -> None:
        """Make sure the counts are views into one counter (re-made when a buffer was replaced)."""
        if self.bns and (self.counts is None or any(bn._buffers["num_batches_tracked"] is not v
                                                    for bn, v in zip(self.bns, self.views))):
            self._alias()

    @torch.compiler.disable  # replaces module buffers: eager, and only when they were replaced
    def _alias(self) -> None:
        not_capturing("the batch counter's stacked num_batches_tracked")
        with torch.no_grad():
            self.counts = torch.stack([bn.num_batches_tracked for bn in self.bns])
        self.views = list(self.counts.unbind(0))
        for bn, v in zip(self.bns, self.views):
            bn._buffers["num_batches_tracked"] = v

    def step(self) -> None:
        if self.bns:
            self.counts.add_(1)


class WideBatchNorm:
    """The BNs of E edges (same width, eps, momentum, affinity) as one BN over E·C channels.

    Mirrors ``nn.BatchNorm2d.forward``, except that ``num_batches_tracked`` is left to a :class:`BatchCounter`;
    BNs that ``sync_bn`` converted take their training statistics over all ranks' batches, as they do alone.
    Its owner calls :meth:`alias` before every forward.
    """

    def __init__(self, bns: Sequence[nn.BatchNorm2d]):
        self.bns = list(bns)
        first = self.bns[0]
        if any((bn.eps, bn.momentum, bn.affine, bn.track_running_stats, bn.num_features)
               != (first.eps, first.momentum, first.affine, first.track_running_stats, first.num_features)
               for bn in self.bns):
            raise ValueError("the BNs of one wide BN must agree in width, eps, momentum and affinity")
        self.synced = isinstance(first, (nn.SyncBatchNorm, SyncBatchNorm2d))
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.views: list[tuple[torch.Tensor, torch.Tensor]] = []  # each edge's (running_mean, running_var) views

    def alias(self) -> None:
        """Make sure the edges' running buffers are views into the wide ones (re-made when a buffer was replaced);
        identity checks only, so that a compiled cell guards on them instead of breaking its graph."""
        if self.bns[0].running_mean is not None and (not self.views or any(
                bn._buffers["running_mean"] is not mean or bn._buffers["running_var"] is not var
                for bn, (mean, var) in zip(self.bns, self.views))):
            self._alias()

    @torch.compiler.disable  # replaces module buffers: eager, and only when they were replaced
    def _alias(self) -> None:
        """Make the edges' running buffers views into one wide buffer (their values kept)."""
        not_capturing("a wide BN's running buffers")
        with torch.no_grad():
            self.mean = torch.cat([bn.running_mean for bn in self.bns])
            self.var = torch.cat([bn.running_var for bn in self.bns])
        C = self.bns[0].num_features
        self.views = list(zip(self.mean.split(C), self.var.split(C)))
        for bn, (mean, var) in zip(self.bns, self.views):
            bn._buffers["running_mean"], bn._buffers["running_var"] = mean, var

    def __call__(self, x: torch.Tensor, training: bool, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The BNs on x's E·C channels; ``scale`` (E·C,), if given, multiplies their output channel by channel
        (folded into the BN's affine transform, so it costs no pass of its own)."""
        first = self.bns[0]
        tracked = first.running_mean is not None
        weight = bias = None
        if first.affine:
            weight = torch.cat([bn.weight for bn in self.bns])
            bias = torch.cat([bn.bias for bn in self.bns])
        if scale is not None:  # in the dtype of the BN's parameters and buffers (float32 under autocast)
            held = weight if weight is not None else self.mean if tracked else None
            scale = scale if held is None else scale.to(held.dtype)
            weight = scale if weight is None else weight * scale
            bias = None if bias is None else bias * scale
        if self.synced and training and spans_ranks():
            tracking = tracked and first.track_running_stats
            return synced_batch_norm(x, self.mean if tracking else None, self.var if tracking else None, weight,
                                     bias, first.momentum, first.eps)
        use_batch = training or not tracked
        stats = tracked and (not training or first.track_running_stats)
        return F.batch_norm(x, self.mean if stats else None, self.var if stats else None, weight, bias, use_batch,
                            first.momentum if training and first.track_running_stats else 0.0, first.eps)


class SharedNorm:
    """The non-affine BNs that follow J parameter-free candidates (pools) of one source on its E edges, computed
    once for all edges: normalised with batch statistics and no affine transform, the E copies of a pooled map
    are one map, so each candidate's BN runs on its C channels, not on E·C. Every edge's running statistics
    still move toward those batch statistics, as its own BN's would.
    """

    def __init__(self, norms: Sequence[WideBatchNorm]):
        self.norms = list(norms)
        first = self.norms[0].bns[0]
        if any(bn.affine or (bn.eps, bn.momentum, bn.track_running_stats, bn.num_features, bn.running_mean is None)
               != (first.eps, first.momentum, first.track_running_stats, first.num_features,
                   first.running_mean is None) for n in self.norms for bn in n.bns):
            raise ValueError("shared BNs must be non-affine and agree in width, eps, momentum and tracking")
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None  # the last batch's (J·C,) mean and variance

    @staticmethod
    def fits(norm: WideBatchNorm) -> bool:
        return not norm.bns[0].affine

    def alias(self) -> None:
        """After the norms' :meth:`WideBatchNorm.alias`: the scratch statistics in the dtype and device of their buffers."""
        held = self.norms[0].mean
        if held is not None and (self.stats is None or self.stats[0].dtype != held.dtype
                                 or self.stats[0].device != held.device):
            self._scratch(held)

    @torch.compiler.disable  # eager, and only when the buffers' dtype or device changed
    def _scratch(self, held: torch.Tensor) -> None:
        not_capturing("the shared norm's statistics")
        J = len(self.norms) * self.norms[0].bns[0].num_features
        self.stats = (held.new_zeros(J), held.new_ones(J))

    def __call__(self, maps: Sequence[torch.Tensor], training: bool) -> torch.Tensor | None:
        """The J maps (N, C, H, W) normalised, (N, J·C, H, W); None where the edges' outputs differ (eval mode with
        running statistics) or the statistics span ranks (the wide path then computes them)."""
        first = self.norms[0].bns[0]
        tracked = first.running_mean is not None
        if (tracked and not training) or (self.norms[0].synced and training and spans_ranks()):
            return None
        x = maps[0] if len(maps) == 1 else torch.cat(list(maps), 1)
        if not (training and tracked and first.track_running_stats):
            return F.batch_norm(x, None, None, None, None, True, 0.0, first.eps)
        mean, var = self.stats
        # momentum 1 makes the BN write the batch's mean and unbiased variance into (mean, var)
        y = F.batch_norm(x, mean, var, None, None, True, 1.0, first.eps)
        C = first.num_features
        wide = [n.mean.view(len(n.bns), C) for n in self.norms] + [n.var.view(len(n.bns), C) for n in self.norms]
        batch = [s[j * C:(j + 1) * C].expand_as(w) for s in (mean, var) for j, w in enumerate(wide[:len(self.norms)])]
        torch._foreach_lerp_(wide, batch, first.momentum)
        return y
