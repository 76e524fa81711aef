"""Training-step speed of evaluation networks: channels-last against the default layout (and --amp on a GPU).

Each row builds a :class:`gradnas.train.Trainer` from a recipe on synthetic CIFAR-shaped data and times its
``step`` (forward with auxiliary head, backward, clip, SGD) in every variant. Timed steps run round-robin over
all variants, so a burst of load on a shared machine hits each alike; medians are reported, with the
ratio against the same row's contiguous float32 step measured in the same run.

    python bench/train_step.py                  # published sizes (DARTS_V2 C=36 L=20 b96, NB201 C=16 N=5 b256)
    python bench/train_step.py --quick          # C=16 L=8 b32 and NB201 b64: a few minutes on 2 CPU cores
    python bench/train_step.py --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

from gradnas.data import ImageDataset
from gradnas.runtime import resolve_device
from gradnas.train import Trainer, resolve_train_config

ROWS = {"darts_v2-cifar": {"genotype": "darts_v2"}, "nb201-is-darts": {"genotype": "nb201_is_darts"}}
QUICK = {"darts_v2-cifar": {"channels": 16, "layers": 8, "batch_size": 32}, "nb201-is-darts": {"batch_size": 64}}


def synthetic(n: int) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 10
    return ImageDataset("synthetic", x, y, x[:8], y[:8], 10, (0.5,) * 3, (0.25,) * 3, crop_padding=4)


def variants(device: torch.device) -> dict[str, dict[str, Any]]:
    out = {"contiguous": {"channels_last": False}, "channels_last": {"channels_last": True}}
    if device.type == "cuda":
        out["channels_last+amp"] = {"channels_last": True, "amp": True}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    p.add_argument("--quick", action="store_true", help="smaller nets and batches")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    records = []
    for row in args.rows:
        trainers: dict[str, Trainer] = {}
        for name, options in variants(device).items():
            overrides = {**ROWS[row], **(QUICK[row] if args.quick else {}), **options, "device": str(device),
                         "progress": False, "out": tempfile.mkdtemp(prefix="gradnas-bench-")}
            config = resolve_train_config(overrides)
            trainers[name] = Trainer(config, synthetic(2 * config.batch_size))
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for i in range(args.steps + 1):  # the first round warms up
            for name, t in trainers.items():
                x, y = next(iter(t.train_loader))
                x = x.contiguous(memory_format=t.memory_format)
                t.model.train()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                t.step(x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["contiguous"])
        for name, ts in times.items():
            c = trainers[name].config
            med = statistics.median(ts)
            records.append({"row": row, "variant": name, "device": str(device), "batch": c.batch_size,
                            "channels": c.channels, "layers": c.layers, "median_s": med, "min_s": min(ts),
                            "max_s": max(ts), "images_per_s": c.batch_size / med, "speedup": base / med})
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        print(f"{'row':<16}{'variant':<19}{'batch':>6}{'median s':>10}{'min s':>8}{'max s':>8}{'img/s':>9}"
              f"{'× contiguous':>14}")
        for r in records:
            print(f"{r['row']:<16}{r['variant']:<19}{r['batch']:>6}{r['median_s']:>10.3f}{r['min_s']:>8.3f}"
                  f"{r['max_s']:>8.3f}{r['images_per_s']:>9.1f}{r['speedup']:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
