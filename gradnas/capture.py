"""A training iteration captured once as a CUDA graph and replayed (``--cuda-graph``, docs/methods.md §13).

The supernet's iteration is thousands of small kernels whose launches, not their arithmetic, bound a GPU;
a replayed graph launches them all at once. :class:`CapturedStep` runs a step function a few times eagerly
on a side stream (optimiser state and cuDNN plans come into being), then captures it on static copies of
its inputs and from then on copies each batch into them and replays. The step must not synchronise with the
host (tests/test_host_sync.py checks every preset) and must read every value that changes between calls
from device tensors: the optimisers here keep their rates and step counters on the device
(:mod:`gradnas.optim`), and random draws come from the device's default generator, whose offsets a graph
advances on every replay. One graph serves the whole run; the caller names what it bakes in (the supernet's
active ops, which steps run) and a change of that captures anew, in the same memory pool.

:class:`Tape` is the CPU stand-in the tests and ``bench/gpu_check.py --cpu`` use: it records the operations
a capture dispatches and replays them on the recorded tensors, without the Python that issued them.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Hashable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .errors import GradnasError, first_line
from .profiling import HOST_SYNCS

Tensors = Sequence[torch.Tensor]
_taping = threading.local()


def capturing() -> bool:
    """Whether this thread is capturing a graph (a CUDA stream, or :class:`Tape` on the CPU)."""
    if getattr(_taping, "active", False):
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def not_capturing(what: str) -> None:
    """Raise when ``what`` (an object built once and then reused by every step) would be built inside a capture:
    its allocation would live in the graph's pool and its values be baked in. The eager warm-ups build it."""
    if capturing():
        raise RuntimeError(f"{what} built while a graph captures; the eager warm-up calls must build it")


class CudaGraphs:
    """Warm-up, capture and replay with ``torch.cuda``: the backend :class:`CapturedStep` uses on a GPU. Every
    graph it captures allocates from one memory pool."""

    def __init__(self):
        self.pool = None

    def warm_up(self, fn: Callable[..., tuple], inputs: Tensors) -> tuple:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def capture(self, fn: Callable[..., tuple], static_inputs: Tensors) -> tuple[torch.cuda.CUDAGraph, tuple]:
        self.pool = self.pool or torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: a streamed loader's pin-memory thread calls CUDA while this thread captures, which the
        # default "global" mode turns into a failed capture and an error in that thread at the next batch.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = fn(*static_inputs)
        return graph, out

    def replay(self, graph: torch.cuda.CUDAGraph, out: tuple) -> tuple:
        graph.replay()
        return out

    def release(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.reset()  # its blocks go back to the pool for the next capture


class CapturedStep:
    """``fn(*inputs) -> tuple of tensors``, eager for ``warmup`` calls, then captured and replayed.

    :meth:`bind` swaps the function and names what the graph bakes in; when that changes, the next calls warm
    up and capture anew. A call whose inputs differ in shape, dtype, device or strides from the captured ones
    runs eagerly. The tensors a replay returns are the graph's own outputs, overwritten by the next replay:
    use them (or enqueue work on them) before calling again. A failed capture is a :class:`GradnasError`:
    after a failed ``capture_end`` the stream and the allocator are in a state PyTorch leaves undefined, so
    the run stops (its last checkpoint kept) rather than going on from there.
    """

    def __init__(self, fn: Callable[..., tuple] | None = None, warmup: int = 3, backend=None):
        self.fn, self.warmup = fn, warmup
        self.backend = backend or CudaGraphs()
        self.key: Hashable = None
        self.eager_calls = self.captures = self.replays = 0
        self.graph = None
        self.static_inputs: list[torch.Tensor] | None = None
        self.outputs: tuple = ()

    def bind(self, fn: Callable[..., tuple], key: Hashable) -> CapturedStep:
        """Run ``fn`` from now on; ``key``: what a graph of it bakes in (compared with ``==``)."""
        self.fn = fn
        if key != self.key:
            self.key = key
            self._release()
        return self

    def _release(self) -> None:
        if self.graph is not None:
            self.backend.release(self.graph)
        self.graph, self.static_inputs, self.outputs, self.eager_calls = None, None, (), 0

    def _fits(self, inputs: Tensors) -> bool:
        return len(inputs) == len(self.static_inputs) and all(
            (x.shape, x.dtype, x.device, x.stride()) == (s.shape, s.dtype, s.device, s.stride())
            for x, s in zip(inputs, self.static_inputs))

    def __call__(self, *inputs: torch.Tensor) -> tuple:
        if self.graph is None:
            if self.eager_calls < self.warmup:
                self.eager_calls += 1
                return self.backend.warm_up(self.fn, inputs)
            self.static_inputs = [x.clone() for x in inputs]
            try:
                self.graph, self.outputs = self.backend.capture(self.fn, self.static_inputs)
            except RuntimeError as err:
                self.graph = self.static_inputs = None
                raise GradnasError(f"the iteration could not be captured as a CUDA graph ({first_line(err)}); "
                                   "rerun with --cuda-graph off (a run resumes with --resume DIR --cuda-graph off)"
                                   ) from None
            self.captures += 1
        elif not self._fits(inputs):
            return self.fn(*inputs)
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        self.replays += 1
        return self.backend.replay(self.graph, self.outputs)


def capture_mode(setting: str, device: torch.device, unsafe: str | None) -> bool:
    """Whether to capture: ``setting`` auto, on or off; ``unsafe`` why this run cannot be captured (None: it
    can). ``auto`` captures where it can; ``on`` where capture cannot work is a :class:`GradnasError`."""
    if setting == "off":
        return False
    why = unsafe if device.type == "cuda" else f"device {device.type} (CUDA graphs need a CUDA device)"
    if why is not None and setting == "on":
        raise GradnasError(f"--cuda-graph on: cannot capture this run: {why}")
    return why is None


class Tape:
    """A CUDA graph's behaviour on the CPU, for tests: :meth:`capture` runs the step once under a dispatch mode
    that records every operation with its argument and result tensors; :meth:`replay` runs the recorded
    operations again on those tensors, writing each result into the recorded one. No Python of the step runs
    at a replay, so a number it read from the host (a float rate) stays as it was at capture, as on a GPU;
    random operations draw anew from the default generator, as a graph's advancing offsets do. A CPU
    capture cannot defer its work, so the capture's own run stands for the first replay. An operation that
    reads a value back (``.item()``, ``nonzero``) fails the capture, as it does on a GPU."""

    def __init__(self):
        self.warmups = self.captures = self.replays = self.released = 0

    def warm_up(self, fn: Callable[..., tuple], inputs: Tensors) -> tuple:
        self.warmups += 1
        return fn(*inputs)

    def capture(self, fn: Callable[..., tuple], static_inputs: Tensors) -> tuple[_Recorder, tuple]:
        recorder = _Recorder()
        _taping.active = True
        try:
            with recorder:
                out = fn(*static_inputs)
        finally:
            _taping.active = False
        self.captures += 1
        return recorder, out

    def replay(self, graph: _Recorder, out: tuple) -> tuple:
        self.replays += 1
        if graph.fresh:  # the capture's own run was this replay
            graph.fresh = False
            return out
        with torch.no_grad():
            for func, args, kwargs, result in graph.ops:
                fresh = func(*args, **kwargs)
                for old, new in zip(tree_leaves(result), tree_leaves(fresh)):
                    if isinstance(old, torch.Tensor) and new is not old:
                        old.copy_(new)
        return out

    def release(self, graph: _Recorder) -> None:
        self.released += 1
        graph.ops.clear()


class _Recorder(TorchDispatchMode):
    """The operations dispatched inside the block, each with its arguments and result."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[Any, tuple, dict, Any]] = []
        self.fresh = True  # captured and run, not yet replayed

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in HOST_SYNCS:
            raise RuntimeError(f"operation not permitted when stream is capturing (aten.{func.overloadpacket.__name__} "
                               "reads a value back)")
        out = func(*args, **kwargs)
        if not func.is_view:  # a view aliases recorded tensors, which the replay updates in place
            self.ops.append((func, args, kwargs, out))
        return out
