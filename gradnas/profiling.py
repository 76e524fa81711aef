"""Memory accounting shared by ``gradnas search --dry-run`` and the benchmarks."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn


def saved_activation_bytes(model: nn.Module, forward: Callable[[], Any]) -> tuple[int, int]:
    """Bytes and count of the distinct storages autograd saves while ``forward()`` runs (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        # Detached (same storage): a saved output handed back as itself would point at the node that saves it,
        # a reference cycle that keeps the whole graph, every activation, alive after the forward.
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values()), len(seen)


def state_bytes(*modules_or_optimizers: Any) -> int:
    """Bytes held by parameters, their gradients and optimiser state (momentum, Adam moments)."""
    total = 0
    for obj in modules_or_optimizers:
        if isinstance(obj, nn.Module):
            total += sum(2 * p.numel() * p.element_size() for p in obj.parameters())  # value + gradient
        else:
            total += sum(t.numel() * t.element_size() for state in obj.state.values()
                         for t in state.values() if torch.is_tensor(t))
    return total


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")
