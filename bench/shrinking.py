"""IS-DARTS: the supernet gets cheaper as progressive shrinking removes candidates.

For each space it builds the ``is-darts`` supernet exactly as the search does (masks, batch-statistics BN in
the cells, channels-last), then copies of it shrunk by the published schedule (NB201: 4 steps, 5 → 1 op per edge;
DARTS: 7 steps, 16/24/32/40 → 2 candidates per node; ``none`` goes first) and times one training step
(``weight_step``, Nesterov SGD) of each, round-robin so a burst of load on a shared machine hits every row
alike. Ratios are against the unshrunk supernet measured in the same run. It also times one importance
measurement (N images, eval mode, no gradients) before and after shrinking. Removed ops are dropped from
the edges, so the removed ops cost nothing; the authors' code multiplies them by zero and gains nothing.

    python bench/shrinking.py                         # both spaces at the published size (CPU: minutes)
    python bench/shrinking.py --spaces nb201 --steps 10 --json
    python bench/shrinking.py --quick                 # tiny smoke configuration
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn as nn

from gradnas.config import resolve_config
from gradnas.search.loop import build_search_model, weight_step
from gradnas.search.model import SearchModel
from gradnas.selection.importance import fisher_totals, mixed_op
from gradnas.selection.shrinking import comparable, comparison_subsets, shrink, shrink_epochs, shrink_steps

FULL = {"darts": {"channels": 16, "layers": 8}, "nb201": {"channels": 16, "layers": 5}}
QUICK = {"darts": {"channels": 8, "layers": 3}, "nb201": {"channels": 8, "layers": 1}}


def shrunk_copies(model: SearchModel, space: str, rate: float, seed: int = 0) -> list[tuple[str, SearchModel]]:
    """The model before shrinking and after every step, ranked by random importance (none lowest)."""
    arch = model.arch
    subsets = comparison_subsets(space, arch.in_degrees, len(arch.op_names))
    types = tuple(dict.fromkeys(arch.cell_types))
    steps = shrink_steps(rate)
    alive = {t: torch.ones(arch.num_edges, len(arch.op_names), dtype=torch.bool) for t in types}
    g = torch.Generator().manual_seed(seed)
    copies = [("all ops", model)]
    for step in range(steps):
        current = copy.deepcopy(copies[-1][1])
        for t in types:
            scores = torch.rand(alive[t].shape, generator=g, dtype=torch.float64) + 0.1
            scores[:, arch.op_names.index("none")] = 0.0  # F = ∞
            alive[t] = shrink(comparable(space, scores, arch.op_names), alive[t], subsets, steps, step)
            current.arch.set_alive(t, alive[t])
        for cell, kind in zip(current.net.cells, current.arch.cell_types):
            for e, edge in enumerate(cell.edges):
                for o in (~alive[kind][e]).nonzero().flatten().tolist():
                    mixed_op(edge).remove(o)
        ops_left = sum(len(mixed_op(edge).active) for edge in current.net.cells[0].edges)
        copies.append((f"after step {step + 1} ({ops_left} ops/cell)", current))
    return copies


def time_rows(copies: list[tuple[str, SearchModel]], batch: tuple[torch.Tensor, torch.Tensor], steps: int,
              warmup: int = 1) -> dict[str, list[float]]:
    criterion = nn.CrossEntropyLoss()
    optimizers = {name: torch.optim.SGD(m.weight_parameters(), lr=0.025, momentum=0.9, nesterov=True,
                                        weight_decay=3e-4) for name, m in copies}
    times: dict[str, list[float]] = {name: [] for name, _ in copies}
    for i in range(warmup + steps):
        for name, model in copies:  # round-robin: load bursts hit every row alike
            weights = list(model.weight_parameters())
            start = time.perf_counter()
            weight_step(model, criterion, optimizers[name], weights, batch, 5.0)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def time_measurement(model: SearchModel, images: torch.Tensor, batch_size: int, repeats: int) -> list[float]:
    batches = [(x, None) for x in images.split(batch_size)]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fisher_totals(model, batches)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["nb201", "darts"], choices=["nb201", "darts"])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per row")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="tiny supernets, 16 px, batch 8")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size, batch_size = (16, 8) if args.quick else (32, args.batch_size)
    torch.manual_seed(0)
    for space in args.spaces:
        config = resolve_config({"space": space, "method": "is-darts", **(QUICK if args.quick else FULL)[space]})
        model = build_search_model(config, 10).to(memory_format=torch.channels_last)
        copies = shrunk_copies(model, space, config.shrink_rate)
        x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
        batch = (x, torch.randint(0, 10, (batch_size,)))
        times = time_rows(copies, batch, args.steps)
        n = 16 if args.quick else config.iim_samples
        images = torch.randn(n, 3, size, size).contiguous(memory_format=torch.channels_last)
        measure = {name: time_measurement(m, images, batch_size, max(1, args.steps // 2))
                   for name, m in (copies[0], copies[-1])}
        base = statistics.median(times[copies[0][0]])
        schedule = shrink_epochs(config.epochs, config.shrink_rate, config.shrink_interval, config.shrink_window)
        if not args.json:
            print(f"\n{space}: C={config.channels}, {config.layers} cells{' per stage' if space == 'nb201' else ''}, "
                  f"batch {batch_size}, {size} px, {torch.get_num_threads()} threads; steps after epochs {schedule}")
            print(f"{'supernet':<32} {'median step':>12} {'min':>8} {'max':>8} {'speed-up':>9}")
        for name, ts in times.items():
            med = statistics.median(ts)
            row = {"space": space, "row": name, "median_s": med, "min_s": min(ts), "max_s": max(ts),
                   "speedup": base / med, "steps": len(ts)}
            text = (f"{name:<32} {med * 1e3:>10.1f}ms {min(ts) * 1e3:>6.0f}ms {max(ts) * 1e3:>6.0f}ms "
                    f"{base / med:>8.2f}×")
            print(json.dumps(row) if args.json else text)
        for name, ts in measure.items():
            med = statistics.median(ts)
            print(json.dumps({"space": space, "row": f"importance over {n} images, {name}", "median_s": med})
                  if args.json else f"importance over {n} images, {name}: {med * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
