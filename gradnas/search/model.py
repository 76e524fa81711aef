"""A supernet bound to its architecture: one module, so data-parallel wrappers and compilers see both."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

from ..arch.base import Architecture


class SearchModel(nn.Module):
    def __init__(self, net: nn.Module, arch: Architecture):
        super().__init__()
        self.net = net
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.arch())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        return self.net.parameters()

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        return self.arch.parameters()
