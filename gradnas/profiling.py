"""What a step costs: saved activations and state (``gradnas search --dry-run``, the benchmarks), the operations
it dispatches, and a guard against host synchronisation inside it."""
from __future__ import annotations

import collections
import os
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import GradnasError

aten = torch.ops.aten
# Not kernels: bare allocations, and _unsafe_view (a view that autograd does not track as one).
_NOT_KERNELS = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided,
                aten._unsafe_view}
# Ops whose result the host must wait for: a value read back (item(), bool(), float()), or a shape that depends
# on the data (nonzero, masked_select, unique). Any of them inside a step stalls the GPU's queue and breaks
# CUDA-graph capture.
HOST_SYNCS = {aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.allclose, aten.nonzero,
               aten.nonzero_static, aten.masked_select, aten.unique_consecutive, aten._unique2, aten.unique_dim,
               aten.bincount}


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


def device_memory(device: torch.device) -> int:
    """All the memory of ``device`` (a GPU's, or the machine's for the CPU), in bytes."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(build: Callable[[], nn.Module], batch: tuple[int, ...], device: torch.device,
               what: str) -> tuple[int, int]:
    """Size ``build()`` and one training forward of a ``batch``-shaped input on the meta device, allocating
    nothing, and refuse with one line what could not fit in ``device``'s memory: weights with their gradients
    and optimiser state, plus the activations saved for the backward (every saved tensor counted, an upper
    bound). A model the meta device cannot run is sized by its weights alone. Returns the bytes of the weights
    and of the activations."""
    with torch.device("meta"):
        model = build()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        saved = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                model.train()(torch.empty(batch))
        except Exception:  # an op without a meta kernel, a user's op: the weights are still a bound
            saved[0] = 0
    need, have = 3 * weights + saved[0], device_memory(device)
    if need > have:
        raise GradnasError(f"{what} would need about {format_bytes(need)} ({format_bytes(weights)} of weights, "
                           f"{format_bytes(saved[0])} of activations at batch {batch[0]}), more than the "
                           f"{format_bytes(have)} of {device.type} memory: pass a smaller --batch-size, --channels, "
                           "--layers or --image-size")
    return weights, saved[0]


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


class DispatchCounter(TorchDispatchMode):
    """Counts the ATen compute operations dispatched inside the block, by operator: views (which launch no
    kernel) and bare allocations are excluded, so the count approximates the kernels a GPU would launch."""

    def __init__(self):
        super().__init__()
        self.by_op: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket not in _NOT_KERNELS:
            self.by_op[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class HostSyncError(GradnasError):
    """A step read a device value back to the host."""


class HostSyncGuard(TorchDispatchMode):
    """Raises :class:`HostSyncError` when the block makes the host wait for the device or moves data between
    host and device: ``.item()``, ``nonzero``, ``repeat_interleave`` without ``output_size`` (operations), and
    ``.tolist()``, ``.cpu()``, ``.numpy()``, ``.to("cpu")``, indexing with a Python list, ``torch.tensor(data)``
    (calls, seen by a function mode: on the CPU they dispatch nothing a device would show). So the guard
    catches on a CPU-only machine what would stall a GPU or be frozen into a CUDA graph. ``host_tensors`` are
    meant to live on the host even on a GPU run (a non-capturable optimiser's step counters) and may be read."""

    def __init__(self, host_tensors: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.allowed = {id(t) for t in host_tensors}
        self.calls = _HostCalls()

    def __enter__(self):
        self.calls.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self.calls.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if packet in HOST_SYNCS and not all(id(t) in self.allowed for t in tensors):
            raise HostSyncError(f"host synchronisation inside a step: aten.{packet.__name__}")
        if func is aten.repeat_interleave.Tensor and (kwargs or {}).get("output_size") is None:
            raise HostSyncError("host synchronisation inside a step: aten.repeat_interleave without output_size "
                                "(its length is read back)")
        if packet in (aten.index, aten.index_put, aten.index_put_) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
            raise HostSyncError(f"host synchronisation inside a step: boolean-mask indexing (aten.{packet.__name__})")
        if packet in (aten._to_copy, aten.copy_) and _to_host(func, args, kwargs or {}):
            raise HostSyncError(f"host synchronisation inside a step: a copy to the CPU (aten.{packet.__name__})")
        return func(*args, **(kwargs or {}))


class _HostCalls(TorchFunctionMode):
    """The calls that move data between the host and the device whatever the tensors' device (see
    :class:`HostSyncGuard`)."""

    MOVES = {torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.tensor, torch.as_tensor}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func in self.MOVES:
            raise HostSyncError(f"a copy between host and device inside a step: {name}()")
        if func is torch.Tensor.to and _moves(args[0], [*args[1:], kwargs.get("device")]):
            raise HostSyncError("a copy between devices inside a step: .to(device)")
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and _lists_in(args[1]):
            raise HostSyncError("indexing with a Python list inside a step (a host-to-device copy of the index)")
        return func(*args, **kwargs)


def _moves(x: torch.Tensor, targets: list) -> bool:
    """Whether ``.to(*targets)`` names another device than x's, or the host by name ("cpu"): written into a step,
    that is a copy to the host on a GPU, while ``.to(x.device)`` (as ``clip_grad_norm_`` does) is a no-op."""
    return any(t == "cpu" or isinstance(t, (str, torch.device)) and torch.device(t) != x.device for t in targets)


def _lists_in(index: Any) -> bool:
    return isinstance(index, list) or isinstance(index, tuple) and any(isinstance(i, list) for i in index)


def _to_host(func, args, kwargs) -> bool:
    """Whether the copy moves data from an accelerator to the host."""
    if func.overloadpacket is aten.copy_:
        dst, src = args[0], args[1]
        return src.device.type != "cpu" and dst.device.type == "cpu"
    device = kwargs.get("device")
    return args[0].device.type != "cpu" and device is not None and torch.device(device).type == "cpu"


def optimizer_host_tensors(*optimizers: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The step counters a non-capturable optimiser keeps on the host (read with ``.item()`` each step)."""
    return [state["step"] for opt in optimizers for state in opt.state.values()
            if torch.is_tensor(state.get("step")) and state["step"].device.type == "cpu"]
