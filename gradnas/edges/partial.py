"""PC-DARTS partial channel connections (docs/methods.md §3).

Only the first C/K channels go through the candidate ops; the rest bypass them (max-pooled on stride-2
edges); a channel shuffle with K groups then moves the processed slice onto channels 0, K, 2K, … so that
later edges see different channels in their slice.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for a dense channels-last tensor, else the default layout."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def channel_shuffle(parts: torch.Tensor | Sequence[torch.Tensor], groups: int,
                    memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """``shuffle(cat(parts, 1), groups)``: input channel g·(C/groups) + q moves to output channel q·groups + g.

    One copy whatever the number of parts: each part, viewed as (C/groups, its groups) channels, is written
    straight to its place, in ``memory_format`` (default: the first part's), so channels-last stays
    channels-last instead of being turned into the default layout by a reshape.
    """
    parts = [parts] if isinstance(parts, torch.Tensor) else list(parts)
    if groups == 1:
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    channels_last = (memory_format or memory_format_of(parts[0])) == torch.channels_last
    if channels_last:  # work on the (B, H, W, C) view, whose channels are innermost in memory
        parts = [p.permute(0, 2, 3, 1) for p in parts]
    dim = 3 if channels_last else 1
    width = sum(p.shape[dim] for p in parts) // groups
    pieces = [p.unflatten(dim, (p.shape[dim] // width, width)).transpose(dim, dim + 1) for p in parts]
    out = torch.cat(pieces, dim + 1).flatten(dim, dim + 1)
    return out.permute(0, 3, 1, 2) if channels_last else out


class PartialChannelEdge(nn.Module):
    """Wraps an inner edge built for C/K channels.

    ``sampling="first"`` takes the first C/K channels, as the authors' code does; ``"random"`` takes a
    fresh random channel subset each forward (the paper's mask S), an option only. ``"all"`` sends every
    channel through the inner edge (then built for C channels: G-PC-DARTS-A's K groups through one shared
    op, docs/methods.md §4), with no bypass, so stride-2 edges stride every group; the shuffle stays.
    """

    def __init__(self, inner: nn.Module, k: int, stride: int, sampling: str = "first"):
        super().__init__()
        if sampling not in ("first", "random", "all"):
            raise ValueError(f"partial-channel sampling must be 'first', 'random' or 'all', got {sampling!r}")
        if k < 2:
            raise ValueError(f"partial channels need k >= 2, got {k} (k=1 is the plain mixed edge)")
        self.inner, self.k, self.sampling = inner, k, sampling
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 and sampling != "all" else nn.Identity()

    def forward(self, x: torch.Tensor, weights: torch.Tensor, *scales: torch.Tensor, **sampled) -> torch.Tensor | None:
        fmt = memory_format_of(x)
        C = x.shape[1]
        if self.sampling == "all":
            y = self.inner(x, weights, *scales, **sampled)
            return None if y is None else channel_shuffle(y, self.k, fmt)
        width = C // self.k
        if self.sampling == "random":
            # The paper's form Σ_o w_o·o(S∗x) + (1−S)∗x with a fresh random S of C/K channels: the processed
            # channels stay in place and no shuffle follows, since each draw already varies them
            # (docs/methods.md §3 asks only for a random channel choice before slicing [interp]).
            chosen = torch.randperm(C, device=x.device)[:width]
            y = self.inner(x.index_select(1, chosen).contiguous(memory_format=fmt), weights, *scales, **sampled)
            if y is None:
                return None
            # into a copy in x's layout: index_copy's own result is contiguous, which would turn every later
            # state of a channels-last supernet into the default layout
            return self.bypass(x).clone(memory_format=fmt).index_copy_(1, chosen, y)
        x_ops, x_rest = x.split([width, C - width], 1)
        # One dense copy of the slice for all ops: a channel slice is strided, and every pool or conv
        # would otherwise copy it again, into the default layout.
        y = self.inner(x_ops.contiguous(memory_format=fmt), weights, *scales, **sampled)
        if y is None:  # every op of the edge removed
            return None
        return channel_shuffle([y, self.bypass(x_rest)], self.k, fmt)
