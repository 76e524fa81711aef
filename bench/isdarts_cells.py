"""IS-DARTS on NB201: which cells decide an edge. Per-cell Fisher terms F just before the first shrinking step.

IS-DARTS removes, on every edge, the op with the largest F averaged over the cells that share the mask
(docs/methods.md §5.1). This trains the ``is-darts`` supernet of ``bench/nb201_compare.py``'s shared budget
(same data, channels, cells, batch, epochs, schedule scaled the same way) up to the first shrinking step, then
measures F of every op in every cell on the images the search measures on, and prints per cell the F of each
candidate of the chosen edges, the F ratio of skip_connect to nor_conv_3x3 (above 1: the skip goes first)
and the cell's input scale (the mean over pixels of the unbiased std over channels, which is what the
skip's F reads: F = 3(C−1)/C · mean s⁻⁴).

    python bench/isdarts_cells.py                       # the shared budget, seed 0
    python bench/isdarts_cells.py --seed 1 --channels 16 --layers 5 --edges 3←0 1←0
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from gradnas.config import resolve_config
from gradnas.search.loop import Searcher
from gradnas.search.shrinking import ProgressiveShrinking
from gradnas.selection.importance import fisher_totals
from gradnas.selection.shrinking import shrink_epochs
from gradnas.spaces import NB201_OPS

from nb201_compare import NB201_EDGES, SHARED, budget_options


def cell_inputs(model, batches) -> list[float]:
    """Per cell, the mean over images and pixels of the std over channels of the map it receives (eval mode)."""
    scales = [0.0] * len(model.net.cells)
    hooks = [cell.register_forward_pre_hook(lambda m, args, k=k: scales.__setitem__(
        k, scales[k] + args[0].float().std(1).mean().item() * len(args[0]))) for k, cell in enumerate(model.net.cells)]
    images = 0
    model.eval()
    with torch.no_grad():
        for x, _ in batches:
            model(x)
            images += len(x)
    model.train()
    for h in hooks:
        h.remove()
    return [s / images for s in scales]


def measure(args: argparse.Namespace) -> dict:
    """Train to the first shrinking step; per-cell F (cells, edges, ops), its mean over cells and the cells' input scales."""
    if args.threads:
        torch.set_num_threads(args.threads)
    options = budget_options("is-darts", args.epochs, args.batch_size)
    with tempfile.TemporaryDirectory() as out:
        config = resolve_config({"space": "nb201", "method": "is-darts", "data": args.data, "seed": args.seed,
                                 "channels": args.channels, "layers": args.layers, "out": str(Path(out) / "run"),
                                 "progress": False, **options})
        first = shrink_epochs(config.epochs, config.shrink_rate, config.shrink_interval, config.shrink_window)[0]
        searcher = Searcher(config)
        shrinking = next(h for h in searcher.hooks if isinstance(h, ProgressiveShrinking))
        for epoch in range(first):  # the loop's own epochs, up to the first step (no measurement changes them)
            searcher.train_epoch(epoch, searcher.steps, bar=tqdm(disable=True))
            searcher.scheduler.step()
        fmt = searcher.memory_format
        batches = [(x.contiguous(memory_format=fmt), y) for x, y in shrinking.samples]
        sums, counts = fisher_totals(searcher.model, batches)
        scales = cell_inputs(searcher.model, batches)
    return {"F": sums / counts[:, None, None], "mean": sums.sum(0) / counts.sum(), "scales": scales,
            "images": int(counts[0]), "after_epoch": first, "epochs": config.epochs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12, help="the budget's epochs (the schedule scales with it)")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2, help="cells per stage")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default=str(SHARED / "cifar10_subset.npz"))
    parser.add_argument("--edges", nargs="+", default=["3←0"], choices=NB201_EDGES)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    m = measure(args)
    F, mean = m["F"], m["mean"]
    skip, conv = NB201_OPS.index("skip_connect"), NB201_OPS.index("nor_conv_3x3")
    shown = [o for o, name in enumerate(NB201_OPS) if name != "none"]
    print(f"IS-DARTS, NB201, seed {args.seed}: C={args.channels}, {args.layers} cells per stage, after epoch "
          f"{m['after_epoch']} of {m['epochs']} (the first shrinking step); F over {m['images']} images\n")
    for label in args.edges:
        e = NB201_EDGES.index(label)
        print(f"edge {label}\n")
        print("| cell | stage | input scale | " + " | ".join(f"F {NB201_OPS[o]}" for o in shown) + " | skip / 3×3 |")
        print("|---" * (len(shown) + 4) + "|")
        for k in range(len(F)):
            row = " | ".join(f"{F[k, e, o].item():.3g}" for o in shown)
            print(f"| {k} | {k // args.layers + 1} | {m['scales'][k]:.3f} | {row} | "
                  f"{(F[k, e, skip] / F[k, e, conv]).item():.2f} |")
        row = " | ".join(f"{mean[e, o].item():.3g}" for o in shown)
        print(f"| mean | | | {row} | {(mean[e, skip] / mean[e, conv]).item():.2f} |\n")
    return m


if __name__ == "__main__":
    main()
