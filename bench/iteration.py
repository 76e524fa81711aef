"""Whole search iterations as the search runs them: eager, captured as a CUDA graph, compiled cells; fp32 and bf16.

For each row (a method preset at the foundation size: C=16, 8 DARTS cells or 5 NB201 cells per stage) and each
mode it builds a ``Searcher`` on synthetic CIFAR-shaped data and times ``Searcher.iteration`` (architecture
step, when the method has one, then the weight step, optimiser updates included) on fixed device batches,
through ``CapturedStep`` for the captured mode exactly as the loop does. Per row and mode it prints the median
ms per iteration, search images/s (batch / iteration time, as the original code's figures are given), the
peak device memory, the kernel launches per iteration (CUDA runtime launch calls seen by the profiler; a
replayed graph is one) or, on a CPU, the ATen ops dispatched, and the first call's extra time (compilation,
capture). Ratios are against the same row's eager fp32 run, measured in the same process.

``--search`` also times one short search per row and mode from start to end (``search()``: the loop, the
graph captures (one per change of what a graph bakes in), derivation and checkpoints), and
``--bf16-check DATA`` runs a short DARTS search on real images in fp32 and bf16 and reports both genotypes and
accuracies.

    python bench/iteration.py                           # on a GPU: every row, every mode
    python bench/iteration.py --rows darts-b64 --modes eager captured --precisions fp32
    python bench/iteration.py --quick                   # tiny CPU smoke run (eager only)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from typing import Any

import torch

from gradnas.capture import CapturedStep
from gradnas.config import resolve_config
from gradnas.profiling import DispatchCounter
from gradnas.runtime import resolve_device
from gradnas.search.loop import Searcher, search

ROWS: dict[str, dict[str, Any]] = {
    "darts-b64": {"space": "darts", "method": "darts", "batch_size": 64},
    "darts-2nd-b64": {"space": "darts", "method": "darts", "batch_size": 64, "order": 2},
    "pc-darts-k4-b64": {"space": "darts", "method": "pc-darts", "batch_size": 64},
    "pc-darts-k4-b256": {"space": "darts", "method": "pc-darts", "batch_size": 256},
    "is-darts-nb201-b64": {"space": "nb201", "method": "is-darts", "batch_size": 64},
    "g-darts-a-b64": {"space": "darts", "method": "g-darts-a", "batch_size": 64},
    "dnas-b64": {"space": "darts", "method": "dnas", "batch_size": 64},
}
#: The short searches' 5 epochs hold IS-DARTS's 4 shrinking steps when they come every epoch.
SHORT = {"is-darts-nb201-b64": {"shrink_interval": 1}}
MODES = ("eager", "captured", "compiled")
PRECISIONS = ("fp32", "bf16")
FULL = {"darts": {"channels": 16, "layers": 8}, "nb201": {"channels": 16, "layers": 5}}
QUICK = {"darts": {"channels": 4, "layers": 3}, "nb201": {"channels": 4, "layers": 1}}
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")


def synthetic(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def row_config(name: str, mode: str, precision: str, device: torch.device, quick: bool, out: str, **extra):
    row = ROWS[name]
    options = {**row, **(QUICK if quick else FULL)[row["space"]], "device": str(device), "progress": False,
               "amp": precision == "bf16", "compile": mode == "compiled",
               "cuda_graph": "on" if mode == "captured" else "off", "out": out,
               "arch_warmup_epochs": 0, **extra}
    if quick:
        options.update(batch_size=8, iim_samples=16)
    return resolve_config(options)


def measure(name: str, mode: str, precision: str, device: torch.device, quick: bool, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        config = row_config(name, mode, precision, device, quick, out)
        size = 16 if quick else 32
        searcher = Searcher(config, synthetic(max(4 * config.batch_size, 256), size), claim=False)
        active = searcher.update.active(0)
        x, y = next(iter(searcher.train_loader))
        batches = [x.contiguous(memory_format=searcher.memory_format), y]
        if active:
            xv, yv = next(iter(searcher.val_loader))
            batches += [xv.contiguous(memory_format=searcher.memory_format), yv]
        iteration = partial(searcher.iteration, active)
        step = CapturedStep(iteration) if mode == "captured" else iteration
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        times = []
        for k in range(steps + 4):  # the first four: warm-up, capture, compilation
            if k == 4 and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            start = time.perf_counter()
            step(*batches)
            sync()
            times.append(1000 * (time.perf_counter() - start))
        record = {"row": name, "mode": mode, "precision": precision, "batch": config.batch_size,
                  "ms_per_iteration": statistics.median(times[4:]), "first_calls_ms": sum(times[:4]),
                  "arch_step": active}
        record["images_per_s"] = config.batch_size / record["ms_per_iteration"] * 1000
        record["first_calls_extra_ms"] = record["first_calls_ms"] - 4 * record["ms_per_iteration"]
        if device.type == "cuda":
            record["peak_bytes"] = torch.cuda.max_memory_allocated(device)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                    torch.profiler.ProfilerActivity.CUDA]) as prof:
                step(*batches)
                sync()
            record["launches"] = sum(e.count for e in prof.key_averages() if e.key in LAUNCHES)
        elif mode != "captured":
            with DispatchCounter() as counter:
                step(*batches)
            record["aten_ops"] = counter.total
        return record


def short_search(name: str, mode: str, precision: str, device: torch.device, quick: bool, data) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        config = row_config(name, mode, precision, device, quick, out, epochs=5, steps_per_epoch=10 if quick else 50,
                            **SHORT.get(name, {}))
        start = time.perf_counter()
        result = search(config, data)
        return {"row": name, "mode": mode, "precision": precision, "search_seconds": time.perf_counter() - start,
                "epochs": config.epochs, "steps_per_epoch": config.steps_per_epoch,
                "genotype": str(result.history[-1]["genotype"]), "val_acc": result.history[-1].get("val_acc")}


def bf16_check(data_path: str, device: torch.device, quick: bool) -> list[dict[str, Any]]:
    """A short DARTS search on real images, fp32 then bf16: same genotype, or the difference stated."""
    out = []
    for precision in PRECISIONS:
        with tempfile.TemporaryDirectory() as run:
            config = row_config("darts-b64", "eager", precision, device, quick, run, data=data_path, epochs=3,
                                steps_per_epoch=5 if quick else None)
            result = search(config)
            last = result.history[-1]
            out.append({"check": "bf16", "precision": precision, "genotype": last["genotype"],
                        "train_acc": last["train_acc"], "val_acc": last.get("val_acc")})
    out.append({"check": "bf16", "same_genotype": out[0]["genotype"] == out[1]["genotype"]})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--modes", nargs="+", choices=MODES, default=None, help="default: all on CUDA, eager on a CPU")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None, help="default: both on CUDA")
    p.add_argument("--steps", type=int, default=20, help="timed iterations per row and mode")
    p.add_argument("--device", default="auto")
    p.add_argument("--search", action="store_true", help="also one short search per row and mode, start to end")
    p.add_argument("--bf16-check", metavar="DATA", help="short fp32 and bf16 searches on this dataset")
    p.add_argument("--quick", action="store_true", help="tiny supernets (a smoke run)")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    modes = args.modes or (MODES if cuda else ("eager",))
    precisions = args.precisions or (PRECISIONS if cuda else ("fp32",))
    records = []
    for name in args.rows:
        base = None
        for precision in precisions:
            for mode in modes:
                r = measure(name, mode, precision, device, args.quick, args.steps)
                base = base or (r if (mode, precision) == ("eager", "fp32") else None)
                if base is not None:
                    r["speedup_vs_eager_fp32"] = base["ms_per_iteration"] / r["ms_per_iteration"]
                records.append(r)
                print(json.dumps(r) if args.json else
                      f"{name:20s} {mode:8s} {precision:4s} {r['ms_per_iteration']:9.1f} ms/it "
                      f"{r['images_per_s']:8.1f} img/s  ×{r.get('speedup_vs_eager_fp32', float('nan')):.2f}  "
                      f"launches {r.get('launches', r.get('aten_ops', '-'))}  peak "
                      f"{r.get('peak_bytes', 0) / 2**30:.2f} GiB  first calls +{r['first_calls_extra_ms']:.0f} ms",
                      flush=True)
        if args.search:
            data = synthetic(4 * 64 * 50 if not args.quick else 256, 16 if args.quick else 32)
            for precision in precisions:
                for mode in modes:
                    r = short_search(name, mode, precision, device, args.quick, data)
                    print(json.dumps(r) if args.json else
                          f"{name:20s} {mode:8s} {precision:4s} search {r['search_seconds']:.1f} s "
                          f"({r['epochs']}×{r['steps_per_epoch']} steps)", flush=True)
    if args.bf16_check:
        for r in bf16_check(args.bf16_check, device, args.quick):
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
