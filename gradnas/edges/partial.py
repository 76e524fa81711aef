"""PC-DARTS partial channel connections (METHODS.md §3).

Only the first C/K channels go through the candidate ops; the rest bypass them (max-pooled on stride-2
edges); a channel shuffle with K groups then moves the processed slice onto channels 0, K, 2K, … so that
later edges see different channels in their slice.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Input channel g·(C/groups) + q moves to output channel q·groups + g."""
    if groups == 1:
        return x
    B, C, H, W = x.shape
    return x.view(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


class PartialChannelEdge(nn.Module):
    """Wraps an inner edge built for C/K channels.

    ``sampling="first"`` takes the first C/K channels, as the authors' code does; ``"random"`` takes a
    fresh random channel subset each forward (the paper's mask S), an option only.
    """

    def __init__(self, inner: nn.Module, k: int, stride: int, sampling: str = "first"):
        super().__init__()
        if sampling not in ("first", "random"):
            raise ValueError(f"partial-channel sampling must be 'first' or 'random', got {sampling!r}")
        self.inner, self.k, self.sampling = inner, k, sampling
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor, weights: torch.Tensor, *scales: torch.Tensor) -> torch.Tensor:
        if self.sampling == "random":
            x = x[:, torch.randperm(x.shape[1], device=x.device)]
        slice_width = x.shape[1] // self.k
        processed = self.inner(x[:, :slice_width], weights, *scales)
        if processed is None:  # every op of the edge removed
            return None
        return channel_shuffle(torch.cat([processed, self.bypass(x[:, slice_width:])], 1), self.k)
