"""Forward + backward time of the convs of the DARTS cells, per edge and in the wide forms of the batched executor.

For every depthwise conv of a DARTS search cell at C=16 (3×3 and 5×5; dilation 1 or 2; stride 1, and stride 2 on
the reduction cells' input edges) and the 1×1 conv after it, at each stage's width and resolution, it times on
the CPU, in one run: ``per-edge``, E convs of C channels, one per edge, as the per-edge path computes them;
``wide``, one conv over E·C channels (a depthwise one on the input repeated E times, groups E·C; a 1×1 one with
groups E); and ``wide-cpu``, the same wide conv in the form ``gradnas.edges.wide.conv`` gives it (dilated
depthwise convs over the input's pixel phases; the others as they are). Ratios are against ``per-edge``,
measured round-robin in the same run (process CPU time, median).

    python bench/wide_convs.py --threads 1            # batch 64, E = 4
    python bench/wide_convs.py --threads 1 --batch 16 --edges 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn

from gradnas.edges.wide import conv

# (width, resolution, kernel, dilation, stride) of the DARTS supernet's depthwise convs at C=16, 32 px
SHAPES = [(C, H, k, d, 1) for C, H in ((16, 32), (32, 16), (64, 8)) for k in (3, 5) for d in (1, 2)]
SHAPES += [(C, H, k, d, 2) for C, H in ((16, 32), (32, 16)) for k in (3, 5) for d in (1, 2)]
SHAPES += [(C, H, 1, 1, 1) for C, H in ((16, 32), (32, 16), (64, 8))]  # the 1×1 convs (k = 1)


def forms(C: int, H: int, k: int, d: int, s: int, N: int, E: int):
    """The three forms of one shape, each a step (forward and backward) on its own tensors; k = 1: a dense 1×1
    conv per edge, grouped (E groups) when wide."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, H, generator=g).contiguous(memory_format=torch.channels_last)
    groups = 1 if k == 1 else C
    layers = [nn.Conv2d(C, C, k, s, d * (k - 1) // 2, dilation=d, groups=groups, bias=False) for _ in range(E)]
    wide = nn.Conv2d(E * C, E * C, k, s, d * (k - 1) // 2, dilation=d, groups=E * groups, bias=False)
    x_wide = x.repeat(1, E, 1, 1).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(layers[0](x))
    grad_wide = grad.repeat(1, E, 1, 1).contiguous(memory_format=torch.channels_last)

    def per_edge():
        x_ = x.clone().requires_grad_()
        torch.autograd.backward([layer(x_) for layer in layers], [grad] * E)

    def step(f):
        def run():
            x_ = x_wide.clone().requires_grad_()
            f(x_).backward(grad_wide)
        return run

    return {"per-edge": per_edge, "wide": step(wide),
            "wide-cpu": step(lambda t: conv(t, wide.weight, wide, E * groups))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--edges", type=int, default=4, help="edges leaving the node (E)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per form (median)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, E = {args.edges}; "
          f"CPU ms per forward + backward (median of {args.steps}), ratios vs per-edge")
    print(f"{'C':>4} {'H':>3} {'k':>2} {'dil':>3} {'str':>3} {'per-edge':>9} {'wide':>9} {'wide-cpu':>9} "
          f"{'×wide':>6} {'×wide-cpu':>9}")
    totals = dict.fromkeys(("per-edge", "wide", "wide-cpu"), 0.0)
    for shape in SHAPES:
        runs = forms(*shape, args.batch, args.edges)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for f in runs.values():
            f()
        for _ in range(args.steps):  # round-robin, so that load on a shared machine hits every form alike
            for name, f in runs.items():
                start = time.process_time()
                f()
                times[name].append(1000 * (time.process_time() - start))
        ms = {name: statistics.median(t) for name, t in times.items()}
        for name in totals:
            totals[name] += ms[name]
        C, H, k, d, s = shape
        print(f"{C:>4} {H:>3} {k:>2} {d:>3} {s:>3} {ms['per-edge']:>9.2f} {ms['wide']:>9.2f} {ms['wide-cpu']:>9.2f} "
              f"{ms['per-edge'] / ms['wide']:>6.2f} {ms['per-edge'] / ms['wide-cpu']:>9.2f}")
    print(f"{'all':>20} {totals['per-edge']:>9.1f} {totals['wide']:>9.1f} {totals['wide-cpu']:>9.1f} "
          f"{totals['per-edge'] / totals['wide']:>6.2f} {totals['per-edge'] / totals['wide-cpu']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
