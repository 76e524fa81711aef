"""G-DARTS-A channel groups (docs/methods.md §4): shared-weight parallel sampling and per-group attention.

The edge input is split into M contiguous channel groups x^1..x^M and the output is
``f(x) = concat_m(a_m · y^m)`` with ``y^m`` the mixed op's output on group m.

- ``fold=True``, mode "exact" (G-DARTS): one mixed op built for C/M channels serves every group. The groups are
  folded into the batch, (B, M, C/M, H, W) → (B·M, C/M, H, W), so all of them run in one pass with
  shared weights; BN statistics are then pooled over groups (docs/methods.md §4 [interp]).
- ``fold=False``, mode "split" (DARTS-with-Attention; G-DARTS-A, whose grouped convs keep the groups apart by
  themselves): the mixed op runs at full width and only its output is split into M groups.

Since ``a_m · Σ_o w_o·o(x^m) = Σ_o (a_m·w_o)·o(x^m)``, the group scale is multiplied into the op weights
(one weight per op and folded sample, or per op and channel) instead of costing a pass over the output.
"""
from __future__ import annotations

import torch
import torch.nn as nn

#: "exact": groups folded into the batch through one shared op; "split": a full-width op, output split.
GROUP_MODES = ("exact", "split")


def fold_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) → (B·M, C/M, H, W): channel group m of image b becomes sample b·M + m.

    Contiguous input folds as a view. Channels-last input (memory order B, H, W, C) takes one copy into
    memory order (B, M, H, W, C/M), which is the folded tensor in channels-last, so the ops keep their
    fast layout.
    """
    B, C, H, W = x.shape
    if x.is_contiguous():
        return x.view(B * groups, C // groups, H, W)
    nhwc = x.permute(0, 2, 3, 1).reshape(B, H, W, groups, C // groups)
    return nhwc.permute(0, 3, 1, 2, 4).reshape(B * groups, H, W, C // groups).permute(0, 3, 1, 2)


def unfold_groups(y: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of :func:`fold_groups`: (B·M, C/M, H, W) → (B, C, H, W), channels-last kept."""
    N, c, H, W = y.shape
    if y.is_contiguous():
        return y.view(N // groups, groups * c, H, W)
    nhwc = y.permute(0, 2, 3, 1).reshape(N // groups, groups, H, W, c)
    return nhwc.permute(0, 2, 3, 1, 4).reshape(N // groups, H, W, groups * c).permute(0, 3, 1, 2)


class ChannelGroupEdge(nn.Module):
    """Wraps a mixed op: built for C/M channels when ``fold``, for C channels otherwise.

    Called as ``edge(x, op_weights[, group_scale])`` with ``group_scale`` of shape (M,): the attention
    of this edge in this cell. Without it the groups are only folded (or, unfolded, nothing happens).
    """

    def __init__(self, inner: nn.Module, groups: int, fold: bool):
        super().__init__()
        self.inner, self.groups, self.fold = inner, groups, fold and groups > 1

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                group_scale: torch.Tensor | None = None, **sampled) -> torch.Tensor | None:
        M, B, C = self.groups, x.shape[0], x.shape[1]
        if group_scale is not None:
            # (|O|, M): a_m·w_o, in the activations' dtype so that autocast does not promote the outputs
            scaled = (weights[:, None] * group_scale).to(x.dtype)
            if M == 1:
                weights = scaled[:, 0]
            elif self.fold:  # folded sample b·M + m carries group m
                weights = scaled.repeat(1, B).view(len(weights), B * M, 1, 1, 1)
            else:  # output channel m·C/M + q belongs to group m
                weights = scaled.repeat_interleave(C // M, dim=1).view(len(weights), C, 1, 1)
        if not self.fold:
            return self.inner(x, weights, **sampled)
        y = self.inner(fold_groups(x, M), weights, **sampled)
        return None if y is None else unfold_groups(y, M)
