"""A supernet bound to its architecture: one module, so data-parallel wrappers and compilers see both."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

from ..arch.base import Architecture


class SearchModel(nn.Module):
    """``model(x)`` = supernet(x, architecture weights).

    With ``amp_dtype`` set the supernet runs under autocast while the architecture weights (softmax and
    friends) are computed outside it, in float32; logits come back in float32 for the loss.
    """

    def __init__(self, net: nn.Module, arch: Architecture, amp_dtype: torch.dtype | None = None):
        super().__init__()
        self.net = net
        self.arch = arch
        self.amp_dtype = amp_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.arch()
        if self.amp_dtype is None:
            return self.net(x, weights)
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            return self.net(x, weights).float()

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        return self.net.parameters()

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        return self.arch.parameters()
