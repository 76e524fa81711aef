"""The CPU kernels behind the batched executor's CPU forms (docs/methods.md §12), each against the form it replaced,
timed round-robin in one run (process CPU time, median), with the ratio old / new.

- ``pw-filter-grad``: the filter gradient of a grouped 1×1 conv (groups = E, channels-last) by oneDNN's
  ``convolution_backward`` against one ``bmm`` over the groups' strided (pixels, channels) views
  (``gradnas.edges.wide.pointwise``);
- ``phased-5x5``: the filter gradient of a 5×5 depthwise conv on 4×4 phase images (a dilation-2 conv on an 8×8
  map) with the padding inside the conv against explicit padding (``_PhasedDepthwise``);
- ``mixed-add``: adding a contiguous gradient to a channels-last one (what autograd's slice backward handed the
  subsampled inputs) against adding two channels-last ones (``gradnas.edges.wide.subsample``).

    python bench/cpu_kernels.py --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

CL = torch.channels_last
backward = torch.ops.aten.convolution_backward


def cl(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=CL)


def pw_filter_grad(N: int, C: int, H: int, E: int) -> dict[str, Callable[[], object]]:
    x, grad, weight = cl(N, E * C, H, H), cl(N, E * C, H, H), torch.randn(E * C, C, 1, 1)

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 3, 1).reshape(N * H * H, E, C)

    return {"old": lambda: backward(grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], E,
                                    [False, True, False]),
            "new": lambda: torch.bmm(rows(grad).permute(1, 2, 0), rows(x).transpose(0, 1))}


def phased_5x5(N: int, C: int, H: int) -> dict[str, Callable[[], object]]:
    x, grad, weight = cl(N, C, H, H), cl(N, C, H, H), torch.randn(C, 1, 5, 5)
    return {"old": lambda: backward(grad, x, weight, None, [1, 1], [2, 2], [1, 1], False, [0, 0], C,
                                    [False, True, False]),
            "new": lambda: backward(grad, F.pad(x, (2, 2, 2, 2)), weight, None, [1, 1], [0, 0], [1, 1], False,
                                    [0, 0], C, [False, True, False])}


def mixed_add(N: int, C: int, H: int) -> dict[str, Callable[[], object]]:
    a, b, b_contiguous = cl(N, C, H, H), cl(N, C, H, H), torch.randn(N, C, H, H)
    return {"old": lambda: b_contiguous + a, "new": lambda: b + a}


CASES = [("pw-filter-grad", "N=64 C=16 32×32 E=4", lambda: pw_filter_grad(64, 16, 32, 4)),
         ("pw-filter-grad", "N=64 C=32 16×16 E=4", lambda: pw_filter_grad(64, 32, 16, 4)),
         ("pw-filter-grad", "N=64 C=64 8×8 E=4", lambda: pw_filter_grad(64, 64, 8, 4)),
         ("phased-5x5", "N=4·64 C=256 4×4", lambda: phased_5x5(256, 256, 4)),
         ("mixed-add", "N=64 C=128 32×32", lambda: mixed_add(64, 128, 32))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=7, help="timed calls per form (median)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="one timed call each: a smoke run")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 1 if args.quick else args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU ms per call (median of {steps})")
    print(f"{'kernel':15s} {'shape':22s} {'old':>8s} {'new':>8s} {'×':>6s}")
    for name, shape, build in CASES:
        forms = build()
        times: dict[str, list[float]] = {k: [] for k in forms}
        for f in forms.values():
            f()
        for _ in range(steps):  # round-robin: load on a shared machine hits both forms alike
            for k, f in forms.items():
                start = time.process_time()
                f()
                times[k].append(1000 * (time.process_time() - start))
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(f"{name:15s} {shape:22s} {old:8.2f} {new:8.2f} {old / new:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
