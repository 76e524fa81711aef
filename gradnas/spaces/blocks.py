"""Building blocks shared by search supernets and evaluation networks."""
from __future__ import annotations

import torch
import torch.nn as nn

from .ops import ReLUConvBN


class ResidualBlock(nn.Module):
    """The NAS-Bench-201 residual block between stages (docs/methods.md §1.2): halves H×W, Ci → Co."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def imagenet_stems(C_in: int, C: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The mobile-setting stems (DARTS's NetworkImageNet, PC-DARTS's 224-px search supernet): stem0 reduces
    the input 4-fold to C channels, stem1 2-fold more; the first cell takes both, so it sees a reduction."""
    stem0 = nn.Sequential(nn.Conv2d(C_in, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
                          nn.ReLU(), nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
    stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
    return stem0, stem1


def drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (DARTS evaluation nets). A 0-dim
    tensor ``drop_prob`` (the trainer's, which a captured step reads at every replay) draws its mask at 0 too."""
    if not torch.is_tensor(drop_prob) and drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


def drop_running_stats(module: nn.Module) -> nn.Module:
    """Make every BatchNorm in ``module`` normalise with the statistics of the current batch, in training and
    in eval mode alike, and keep no running estimates (the IS-DARTS supernet, docs/methods.md §5.2)."""
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.track_running_stats = False
            bn.running_mean = bn.running_var = bn.num_batches_tracked = None
    return module
