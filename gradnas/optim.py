"""Optimisers whose step reads nothing from the host, so that a CUDA graph can capture it (docs/methods.md §13).

``torch.optim.SGD`` turns a tensor learning rate into a Python number (``.item()``) on every step, and a rate
given as a number is baked into a captured graph; ``torch.optim.Adam`` keeps its step counter on the host
unless ``capturable``. :class:`CapturableSGD` keeps each group's rate as a 0-dim tensor on the parameters'
device: the learning-rate schedulers ``fill_`` it between steps and a replayed graph reads the new value.
"""
from __future__ import annotations

from typing import Iterable

import torch


class CapturableSGD(torch.optim.SGD):
    """SGD (momentum, dampening, weight decay, Nesterov) as ``torch.optim.SGD`` computes it with
    ``foreach=True``, with each group's ``lr`` a 0-dim tensor on ``device``; ``initial_lr`` stays a number, so
    the schedulers' closed forms need no read-back.

    The rate is held in float64, the precision of the schedulers' recursive forms (a float32 rate would drift
    over thousands of per-step updates), and cast once per group and step to the parameters' dtype: the CUDA
    fast path of ``_foreach_mul(TensorList, Tensor)`` needs matching dtypes, else it launches one kernel and
    allocates one temporary per parameter tensor."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, foreach=True)
        self._rates_to_tensors()

    def _rates_to_tensors(self) -> None:
        for group in self.param_groups:
            lr = group["lr"]
            group.setdefault("initial_lr", float(lr))
            if not torch.is_tensor(lr) or lr.device != self.device:
                group["lr"] = torch.tensor(float(lr), dtype=torch.float64, device=self.device)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._rates_to_tensors()  # a checkpoint of plain SGD holds numbers

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            momentum, wd = group["momentum"], group["weight_decay"]
            if wd:
                grads = torch._foreach_add(grads, params, alpha=wd)
            if momentum:
                states = [self.state[p] for p in params]
                kept = [(s["momentum_buffer"], g) for s, g in zip(states, grads) if s.get("momentum_buffer") is not None]
                if kept:
                    torch._foreach_mul_([b for b, _ in kept], momentum)
                    torch._foreach_add_([b for b, _ in kept], [g for _, g in kept], alpha=1 - group["dampening"])
                for s, g in zip(states, grads):
                    if s.get("momentum_buffer") is None:  # a parameter's first step: the buffer is its gradient
                        s["momentum_buffer"] = torch.clone(g).detach()
                bufs = [s["momentum_buffer"] for s in states]
                grads = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
            rate = -group["lr"].to(params[0].dtype)
            torch._foreach_add_(params, torch._foreach_mul(grads, rate))
        return loss


def set_lr(group: dict, lr: float) -> None:
    """Set a parameter group's rate, in place when it is a tensor (a captured graph reads that tensor)."""
    if torch.is_tensor(group["lr"]):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def plain_rates(optimizer: torch.optim.Optimizer) -> None:
    """Rates as numbers again, for an eager run resumed from a checkpoint written while capturing (a tensor
    rate would make ``torch.optim.SGD`` read it back at every step)."""
    for group in optimizer.param_groups:
        group["lr"] = float(group["lr"])
