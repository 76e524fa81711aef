"""Search-epoch throughput: the whole loop (data on the device, batched augmentation, arch + weight steps,
logging checks) for DARTS at batch 64 and PC-DARTS at batch 256, under each speed option, in one run.

Each configuration is timed over ``--steps`` iterations of ``Searcher.train_epoch`` after one warm-up
iteration (which also absorbs compilation); images/s counts training images (one weight step and one
architecture step each) and the projected times scale that rate to a CIFAR-10 search epoch (25,000
training images) and to the method's published epoch count. Ratios are against the plain configuration
(float32, contiguous layout, eager) of the same method measured in the same run.

    python bench/search_epoch.py                            # CPU: plain vs channels-last (a few minutes)
    python bench/search_epoch.py --device cuda --options plain channels-last amp compile all
    python bench/search_epoch.py --data ../shared/data/cifar10_subset.npz --json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from gradnas.config import resolve_config
from gradnas.data import ImageDataset, load_dataset
from gradnas.search.loop import Searcher

METHODS = {"darts-b64": ("darts", {"batch_size": 64}), "pc-darts-b256": ("pc-darts", {"batch_size": 256})}
OPTIONS = {
    "plain": {"channels_last": False},
    "channels-last": {"channels_last": True},
    "amp": {"channels_last": False, "amp": True},
    "compile": {"channels_last": False, "compile": True},
    "all": {"channels_last": True, "amp": True, "compile": True},
}
CIFAR_SEARCH_IMAGES = 25_000


def synthetic_cifar(n: int = 50_000) -> ImageDataset:
    """CIFAR-10-shaped random uint8 images: speed does not depend on the pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageDataset("synthetic-cifar10", x, y, x[:1000], y[:1000], 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), 4)


def measure(method: str, overrides: dict[str, Any], option: dict[str, Any], data: ImageDataset,
            device: str, steps: int) -> dict[str, Any]:
    preset, extra = METHODS[method]
    with tempfile.TemporaryDirectory() as out:
        config = resolve_config({"method": preset, **extra, **overrides, **option, "device": device,
                                 "arch_warmup_epochs": 0, "progress": False, "out": out})
        searcher = Searcher(config, dataset=data)
        bar = tqdm(disable=True)
        searcher.train_epoch(0, 1, bar)  # warm-up (and compilation)
        if searcher.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        searcher.train_epoch(0, steps, bar)  # ends with a host read of the epoch's totals
        seconds = time.perf_counter() - started
        images_per_s = steps * config.batch_size / seconds
        record = {"method": method, "batch": config.batch_size, "steps": steps, "seconds": round(seconds, 3),
                  "images_per_s": round(images_per_s, 2),
                  "epoch_minutes": round(CIFAR_SEARCH_IMAGES / images_per_s / 60, 2),
                  "search_hours": round(config.epochs * CIFAR_SEARCH_IMAGES / images_per_s / 3600, 2)}
        if searcher.device.type == "cuda":
            record["peak_bytes"] = torch.cuda.max_memory_allocated()
        return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--options", nargs="+", choices=list(OPTIONS), default=["plain", "channels-last"])
    p.add_argument("--steps", type=int, default=3, help="timed iterations per configuration")
    p.add_argument("--data", default=None, help="dataset (default: synthetic CIFAR-10-sized data)")
    p.add_argument("--quick", action="store_true", help="tiny supernet (C=8, 3 cells): a smoke run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    data = load_dataset(args.data) if args.data else synthetic_cifar()
    overrides = {"channels": 8, "layers": 3} if args.quick else {}
    records = []
    for method in args.methods:
        base = None
        for name in ["plain"] + [o for o in args.options if o != "plain"]:
            record = {"option": name, **measure(method, overrides, OPTIONS[name], data, args.device, args.steps)}
            base = base or record["images_per_s"]
            record["ratio_vs_plain"] = round(record["images_per_s"] / base, 2)
            records.append(record)
            print(json.dumps(record) if args.json else
                  f"{method:14s} {name:14s} batch {record['batch']:4d}  {record['images_per_s']:9.1f} img/s  "
                  f"×{record['ratio_vs_plain']:.2f}  epoch {record['epoch_minutes']:8.1f} min  "
                  f"search {record['search_hours']:7.2f} h", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
