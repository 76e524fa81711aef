"""Data-parallel runs on torch.distributed (started by torchrun): ranks, gradient averaging, synced BN.

Gradients are averaged with one coalesced ``all_reduce`` per gradient set rather than through
DistributedDataParallel: the bilevel step asks autograd for the gradients of chosen parameter subsets
(weights only, architecture only, weights at a virtual point), which DDP's accumulation hooks never see.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> tuple[torch.device, Context]:
    """Join the process group torchrun describes in the environment (a plain run is a world of one); on GPUs
    each rank takes the device of its local rank. Returns the rank's device and its context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return device, Context()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    context = Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    return device, context


def average_(tensors: list[torch.Tensor], context: Context) -> list[torch.Tensor]:
    """Average tensors over all ranks in place with one all_reduce of a flat buffer."""
    if not context.enabled or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= context.world_size
    torch._foreach_copy_(tensors, [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)])
    return tensors


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the union of all ranks' batches, on any device (PyTorch's SyncBatchNorm is GPU-only).

    Statistics are reduced with the differentiable all_reduce, so gradients flow through them as in a
    single process holding the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and spans_ranks()):
            return super().forward(x)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
        return synced_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.momentum,
                                 self.eps)


def spans_ranks() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def synced_batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                      weight: torch.Tensor | None, bias: torch.Tensor | None, momentum: float,
                      eps: float) -> torch.Tensor:
    """Training-mode batch norm of x over the union of all ranks' batches; the running statistics, if given,
    move toward the union's mean and unbiased variance by ``momentum`` in place."""
    count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device, dtype=x.dtype)
    moments = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count.view(1)])
    moments = differentiable_all_reduce(moments)
    C = x.shape[1]
    n = moments[-1]
    mean = moments[:C] / n
    var = moments[C:2 * C] / n - mean * mean
    if running_mean is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
            running_var.lerp_((var.detach() * n / (n - 1)).to(running_var.dtype), momentum)
    y = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + eps)
    if weight is not None:
        y = y * weight.view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm2d: PyTorch's SyncBatchNorm on GPUs, :class:`SyncBatchNorm2d` elsewhere."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm2d):
            synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            convert_sync_batchnorm(child, device_type)
    return module


__all__ = ["Context", "init_from_env", "average_", "SyncBatchNorm2d", "convert_sync_batchnorm", "spans_ranks",
           "synced_batch_norm"]
