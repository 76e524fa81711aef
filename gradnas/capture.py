"""A training iteration captured once as a CUDA graph and replayed (``--cuda-graph``, docs/methods.md §13).

The supernet's iteration is thousands of small kernels whose launches, not their arithmetic, bound a GPU;
a replayed graph launches them all at once. :class:`CapturedStep` runs a step function a few times eagerly
on a side stream (optimiser state and cuDNN plans come into being), then captures it on static copies of
its inputs and from then on copies each batch into them and replays. The step must not synchronise with the
host (tests/test_host_sync.py checks every preset) and must read every value that changes between calls
from device tensors: the optimisers here keep their rates and step counters on the device
(:mod:`gradnas.optim`), and random draws come from the device's default generator, whose offsets a graph
advances on every replay. A graph is valid for one epoch: the search makes a new one each epoch, since
hooks change the supernet between epochs (IS-DARTS removes ops) and epoch-wise values (β-DARTS's λ, drop
path) are baked into it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import GradnasError, first_line
from .runlog import log

Tensors = Sequence[torch.Tensor]


class CudaGraphs:
    """Warm-up, capture and replay with ``torch.cuda``: the backend :class:`CapturedStep` uses on a GPU."""

    def warm_up(self, fn: Callable[..., tuple], inputs: Tensors) -> tuple:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def capture(self, fn: Callable[..., tuple], static_inputs: Tensors) -> tuple[torch.cuda.CUDAGraph, tuple]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*static_inputs)
        return graph, out

    def replay(self, graph: torch.cuda.CUDAGraph, out: tuple) -> tuple:
        graph.replay()
        return out


class CapturedStep:
    """``fn(*inputs) -> tuple of tensors``, eager for ``warmup`` calls, then captured and replayed.

    A call whose inputs differ in shape, dtype or device from the captured ones runs eagerly. The tensors a
    replay returns are the graph's own outputs, overwritten by the next replay: use them (or enqueue work on
    them) before calling again. ``strict``: a failed capture raises :class:`GradnasError`; otherwise it logs
    one warning and the step runs eagerly from then on (``failed``).
    """

    def __init__(self, fn: Callable[..., tuple], warmup: int = 3, strict: bool = False, backend=None):
        self.fn, self.warmup, self.strict = fn, warmup, strict
        self.backend = backend or CudaGraphs()
        self.calls = 0
        self.graph = None
        self.static_inputs: list[torch.Tensor] | None = None
        self.outputs: tuple = ()
        self.failed = False

    def _fits(self, inputs: Tensors) -> bool:
        return all((x.shape, x.dtype, x.device, x.stride()) == (s.shape, s.dtype, s.device, s.stride())
                   for x, s in zip(inputs, self.static_inputs))

    def __call__(self, *inputs: torch.Tensor) -> tuple:
        self.calls += 1
        if self.failed or self.calls <= self.warmup:
            return self.fn(*inputs) if self.failed else self.backend.warm_up(self.fn, inputs)
        if self.graph is None:
            self.static_inputs = [x.clone() for x in inputs]
            try:
                self.graph, self.outputs = self.backend.capture(self.fn, self.static_inputs)
            except RuntimeError as err:
                self.graph, self.static_inputs, self.failed = None, None, True
                if self.strict:
                    raise GradnasError(f"the iteration could not be captured as a CUDA graph "
                                       f"({first_line(err)}); run without --cuda-graph on") from None
                log.warning("the iteration could not be captured as a CUDA graph (%s): it runs eagerly",
                            first_line(err))
                return self.fn(*inputs)
        elif not self._fits(inputs):
            return self.fn(*inputs)
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        return self.backend.replay(self.graph, self.outputs)


def capture_mode(setting: str, device: torch.device, unsafe: str | None) -> bool | None:
    """Whether to capture: ``setting`` auto, on or off; ``unsafe`` why this run cannot be captured (None: it
    can). Returns None (eager), False (capture, a failure falls back) or True (capture, a failure is an error).
    ``on`` where capture cannot work is a :class:`GradnasError`."""
    if setting == "off":
        return None
    why = unsafe if device.type == "cuda" else f"device {device.type} (CUDA graphs need a CUDA device)"
    if why is not None:
        if setting == "on":
            raise GradnasError(f"--cuda-graph on: cannot capture this run: {why}")
        return None
    return setting == "on"

