"""Search-step speed and memory of the library's supernets, with ratios against DARTS at batch 64.

For each configuration row (a method preset plus overrides) it builds the model exactly as the search
does (``build_search_model(resolve_config(...))``, channels-last when configured), then times
``gradnas.search.loop.weight_step`` and ``Bilevel.arch_step`` (first and/or second order) and counts the
bytes of activations saved for backward in one training forward (``saved_tensors_hooks``, each storage
once, parameters excluded). Timed steps run round-robin over all rows, so a burst of load on a shared
machine hits every row alike; the medians are reported, with the fastest and slowest step beside them,
and the process CPU time per step (with ``--threads 1`` far steadier than wall time when other jobs share
the cores; ``×img/cpu-s`` is the images-per-second ratio by that clock). Each row runs with both supernet
executors by default (``--executor``): the search's default, batched (all edges leaving a node at once), and
the per-edge reference, side by side in the same round-robin; ``×per-edge`` is the batched row's CPU-time
speed-up. The rows hold every method preset (tests/test_bench.py checks it).

    python bench/search_step.py                      # every row, 3 timed steps each (CPU: a few minutes)
    python bench/search_step.py --rows darts-b64 pc-darts-k4-b64 --steps 10 --json
    python bench/search_step.py --quick              # tiny smoke configuration
    python bench/search_step.py --rows pc-darts-k4-b64 --kinds weight arch-1 --threads 1

Later methods add rows to ``ROWS``; ``BASELINE`` is always measured, since ratios need it in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.profiling import saved_activation_bytes
from gradnas.runtime import resolve_device
from gradnas.search.bilevel import ARCH_UPDATES
from gradnas.search.checkpoint import seed_everything
from gradnas.search.loop import build_search_model, place_model, weight_step

STEPS = ("weight", "arch-1", "arch-2")  # weight step; architecture step of order 1 or 2
NUM_CLASSES, IMAGE_SIZE = 10, 32


@dataclass(frozen=True)
class Row:
    name: str
    space: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    steps: tuple[str, ...] = ("weight", "arch-1")


ROWS: list[Row] = [
    Row("darts-b64", "darts", "darts", {"batch_size": 64}, STEPS),
    Row("nb201-darts-b64", "nb201", "darts", {"batch_size": 64}),
    Row("pc-darts-k2-b64", "darts", "pc-darts", {"partial_k": 2, "batch_size": 64}),
    Row("pc-darts-k4-b64", "darts", "pc-darts", {"partial_k": 4, "batch_size": 64}),
    Row("pc-darts-k8-b64", "darts", "pc-darts", {"partial_k": 8, "batch_size": 64}),
    Row("pc-darts-k4-b256", "darts", "pc-darts", {"partial_k": 4, "batch_size": 256}),
    # the paper's random channel subset S (docs/methods.md §3) in place of the code's first C/K channels
    Row("pc-darts-k4-random-b64", "darts", "pc-darts", {"partial_k": 4, "partial_sampling": "random",
                                                        "batch_size": 64}),
    # DNAS global search at its L=14 (docs/methods.md §6) beside its full-form baseline and plain PC-DARTS at L=14
    Row("pc-darts-k4-l14", "darts", "pc-darts", {"partial_k": 4, "layers": 14, "batch_size": 64}),
    Row("pcdarts-global-l14", "darts", "pc-darts-global", {"partial_k": 4, "layers": 14}),
    Row("dnas-l14", "darts", "dnas", {"partial_k": 4, "layers": 14}),
    # G-DARTS-A presets (docs/methods.md §4), M=4 groups with attention, at DARTS's batch
    Row("darts-attn-b64", "darts", "darts-attention", {"batch_size": 64}),
    Row("g-darts-a-b64", "darts", "g-darts-a", {"batch_size": 64}),
    Row("g-pc-darts-a-b64", "darts", "g-pc-darts-a", {"batch_size": 64}),
    Row("g-darts-b64", "darts", "g-darts", {"batch_size": 64}),
    # the other presets, each in the space its paper searches; IS-DARTS and I-DARTS train single-level
    Row("is-darts-nb201", "nb201", "is-darts", {"batch_size": 64}, ("weight",)),
    Row("i-darts-nb201", "nb201", "i-darts", {"batch_size": 64}, ("weight",)),
    Row("s-darts-nb201", "nb201", "s-darts", {"batch_size": 64}),
    Row("is-darts-darts", "darts", "is-darts", {"batch_size": 64}, ("weight",)),
    Row("pc-darts-imagenet-darts", "darts", "pc-darts-imagenet", {"batch_size": 64}),
    Row("beta-darts-nb201", "nb201", "beta-darts", {"batch_size": 64}),
    # GDAS computes one sampled op per edge, edge by edge under either executor (docs/methods.md §14); SNAS is
    # the same network with every op computed, on both executors
    Row("nb201-gdas-b64", "nb201", "gdas", {"batch_size": 64}),
    Row("nb201-snas-b64", "nb201", "snas", {"batch_size": 64}),
    Row("gdas-b64", "darts", "gdas", {"batch_size": 64}),
    Row("snas-b64", "darts", "snas", {"batch_size": 64}),
    Row("nb201-drnas-b64", "nb201", "drnas", {"batch_size": 64}),
]
BASELINE = "darts-b64"
# The foundation setting (C=16; 8 DARTS cells or 5 NB201 cells per stage) and a tiny one for smoke runs.
FULL = {"darts": {"channels": 16, "layers": 8}, "nb201": {"channels": 16, "layers": 5}}
QUICK = {"darts": {"channels": 8, "layers": 3}, "nb201": {"channels": 8, "layers": 1}}
QUICK_IMAGE_SIZE, QUICK_BATCH_DIVISOR = 16, 8


@dataclass
class Measurement:
    row: Row
    step: str
    batch: int
    saved: tuple[int, int]
    run: Callable[[], Any]
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)  # the weights' and the architecture's
    executor: str = "per-edge"


def prepare(row: Row, device: torch.device, quick: bool, options: dict[str, Any]) -> list[Measurement]:
    """Build the row's model, optimiser, architecture update and batches; one Measurement per step kind.
    ``options`` (amp, compile, channels_last, executor) apply to every row, as the search applies them."""
    base = (QUICK if quick else FULL)[row.space]
    config = resolve_config({"space": row.space, "method": row.method, **base, **row.overrides, **options,
                             "device": str(device), "progress": False})
    batch = max(2, config.batch_size // QUICK_BATCH_DIVISOR) if quick else config.batch_size
    # the ImageNet search stems divide the side by 8 before the first cell: the quick size would leave nothing
    size = IMAGE_SIZE if config.imagenet_stem or not quick else QUICK_IMAGE_SIZE
    seed_everything(config.seed)
    model = build_search_model(config, NUM_CLASSES)
    memory_format = place_model(model, config, device)  # as the Searcher does
    criterion = nn.CrossEntropyLoss()
    weights = list(model.weight_parameters())
    optimizer = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                weight_decay=config.weight_decay)

    def data() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
        return x, torch.randint(0, NUM_CLASSES, (batch,), device=device)

    train, val = data(), data()
    model.train()
    saved = saved_activation_bytes(model, lambda: model(train[0]))
    fp16 = model.amp_dtype == torch.float16  # float16 autocast needs loss scaling, as in the search
    updates = {order: ARCH_UPDATES[config.arch_update](
        model, criterion=criterion, order=order, lr=config.arch_lr, betas=config.arch_betas,
        weight_decay=config.arch_weight_decay) for order in (1, 2) if f"arch-{order}" in row.steps
        and not (fp16 and order == 2)}
    for update in updates.values():
        update.scaler = torch.amp.GradScaler() if fp16 else None
    scaler = torch.amp.GradScaler() if fp16 else None
    runs = {"weight": lambda: weight_step(model, criterion, optimizer, weights, train, config.grad_clip,
                                          scaler=scaler),
            "arch-1": lambda: updates[1].arch_step(train, val, optimizer),
            "arch-2": lambda: updates[2].arch_step(train, val, optimizer)}
    optimizers = [optimizer] + [u.optimizer for u in updates.values() if hasattr(u, "optimizer")]
    return [Measurement(row, step, batch, saved, runs[step], optimizers=optimizers, executor=config.executor)
            for step in row.steps if step == "weight" or int(step[-1]) in updates]


def timed(m: Measurement, device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU milliseconds of one step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    m.run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the step itself never waits for the device; timing must
    return 1000 * (time.perf_counter() - start), 1000 * (time.process_time() - cpu)


def measure(rows: list[Row], device: torch.device, steps: int, warmup: int, quick: bool,
            options: dict[str, Any] | None = None, executors: tuple[str, ...] = ("per-edge",)) -> list[dict[str, Any]]:
    measurements = [m for row in rows for executor in executors
                    for m in prepare(row, device, quick, {**(options or {}), "executor": executor})]
    for m in measurements:
        for _ in range(warmup):
            timed(m, device)
    for _ in range(steps):  # round-robin: contention on a shared machine spreads over all rows
        for m in measurements:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            wall, cpu = timed(m, device)
            m.times_ms.append(wall)
            m.cpu_ms.append(cpu)
            if device.type == "cuda":
                m.peak_bytes = max(m.peak_bytes or 0, torch.cuda.max_memory_allocated(device))
    return with_ratios([record(m, device) for m in measurements + iterations(measurements)])


def iterations(measurements: list[Measurement]) -> list[Measurement]:
    """A search iteration, weight step + architecture step of order k ("iter-k"), per row and executor: the two
    steps' times summed round by round (the round-robin times them in the same rounds), then the median."""
    out = []
    for m in measurements:
        if m.step.startswith("arch-"):
            weight = next((w for w in measurements if w.row == m.row and w.executor == m.executor
                           and w.step == "weight"), None)
            if weight is not None:
                out.append(Measurement(m.row, "iter-" + m.step[-1], m.batch, m.saved, m.run,
                                       [a + b for a, b in zip(weight.times_ms, m.times_ms)],
                                       [a + b for a, b in zip(weight.cpu_ms, m.cpu_ms)],
                                       max(weight.peak_bytes or 0, m.peak_bytes or 0) or None,
                                       executor=m.executor))
    return out


def record(m: Measurement, device: torch.device) -> dict[str, Any]:
    ms, cpu = statistics.median(m.times_ms), statistics.median(m.cpu_ms)
    out = {"row": m.row.name, "space": m.row.space, "method": m.row.method, "executor": m.executor,
           "step": m.step, "batch": m.batch,
           "device": str(device), "steps": len(m.times_ms), "ms_per_step": round(ms, 3),
           "ms_min": round(min(m.times_ms), 3), "ms_max": round(max(m.times_ms), 3),
           "images_per_s": round(1000 * m.batch / ms, 3), "cpu_ms_per_step": round(cpu, 3),
           "images_per_cpu_s": round(1000 * m.batch / cpu, 3), "saved_bytes": m.saved[0], "saved_tensors": m.saved[1]}
    if m.peak_bytes is not None:
        out["peak_bytes"] = m.peak_bytes
    return out


def with_ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record against the baseline row's record of the same step (weight vs weight, arch vs arch) and
    executor; a batched record also against the per-edge record of its row and step."""
    base = {(r["step"], r["executor"]): r for r in records if r["row"] == BASELINE}
    per_edge = {(r["row"], r["step"]): r for r in records if r["executor"] == "per-edge"}
    for r in records:
        p = per_edge.get((r["row"], r["step"]))
        if r["executor"] != "per-edge" and p:
            r["speedup_vs_per_edge"] = round(p["ms_per_step"] / r["ms_per_step"], 4)
            r["cpu_speedup_vs_per_edge"] = round(p["cpu_ms_per_step"] / r["cpu_ms_per_step"], 4)
            r["ratio_saved_bytes_vs_per_edge"] = round(r["saved_bytes"] / p["saved_bytes"], 4)
        b = base.get((r["step"], r["executor"]))
        r["ratio_saved_bytes"] = round(r["saved_bytes"] / b["saved_bytes"], 4) if b else None
        r["ratio_images_per_s"] = round(r["images_per_s"] / b["images_per_s"], 4) if b else None
        r["ratio_ms_per_step"] = round(r["ms_per_step"] / b["ms_per_step"], 4) if b else None
        r["ratio_images_per_cpu_s"] = round(r["images_per_cpu_s"] / b["images_per_cpu_s"], 4) if b else None
        if b and "peak_bytes" in r and "peak_bytes" in b:
            r["ratio_peak_bytes"] = round(r["peak_bytes"] / b["peak_bytes"], 4)
    return records


def table(records: list[dict[str, Any]]) -> str:
    head = (f"{'row':18} {'executor':8} {'step':6} {'batch':>5} {'ms/step':>9} {'(min-max)':>17} {'img/s':>8} "
            f"{'cpu ms':>9} {'saved MiB':>10} {'×saved':>7} {'×img/s':>7} {'×img/cpu-s':>10} {'×per-edge':>9}")
    has_peak = any("peak_bytes" in r for r in records)
    lines = [head + (f" {'peak MiB':>9}" if has_peak else "")]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for r in records:
        spread = f"({r['ms_min']:.0f}-{r['ms_max']:.0f})"
        line = (f"{r['row']:18} {r['executor']:8} {r['step']:6} {r['batch']:>5} {r['ms_per_step']:>9.1f} {spread:>17} "
                f"{r['images_per_s']:>8.1f} {r['cpu_ms_per_step']:>9.1f} {r['saved_bytes'] / 2**20:>10.1f} "
                f"{fmt(r['ratio_saved_bytes']):>7} {fmt(r['ratio_images_per_s']):>7} "
                f"{fmt(r['ratio_images_per_cpu_s']):>10} {fmt(r.get('cpu_speedup_vs_per_edge')):>9}")
        if has_peak:
            line += f" {r['peak_bytes'] / 2**20:>9.1f}" if "peak_bytes" in r else f" {'-':>9}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    names = [r.name for r in ROWS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cuda, cpu, ... (default: cuda if available, else cpu)")
    p.add_argument("--rows", nargs="+", choices=names, default=names, metavar="ROW",
                   help=f"rows to run (the baseline {BASELINE} is always added): {', '.join(names)}")
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per measurement first")
    p.add_argument("--quick", action="store_true", help="tiny supernets, 16 px, batch / 8: a smoke run")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: torch's); on a machine shared with other jobs 1 thread "
                        "is far steadier, since the threads of one op wait for each other")
    p.add_argument("--kinds", nargs="+", choices=STEPS, default=STEPS, metavar="STEP",
                   help=f"step kinds to time, where a row has them: {', '.join(STEPS)} (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per measurement instead of a table")
    p.add_argument("--amp", action="store_true", help="mixed precision, as `gradnas search --amp`")
    p.add_argument("--compile", action="store_true", help="torch.compile the supernets, as `gradnas search --compile`")
    p.add_argument("--executor", choices=("both", "per-edge", "batched"), default="both",
                   help="supernet executor(s) to time, side by side (default: both)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="force the memory layout (default: each row's configuration)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        p.error("--steps and --threads must be >= 1 and --warmup >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except GradnasError as err:
        p.error(str(err))
    selected = [Row(r.name, r.space, r.method, r.overrides, tuple(k for k in r.steps if k in args.kinds))
                for r in ROWS if r.name == BASELINE or r.name in args.rows]
    options = {"amp": args.amp, "compile": args.compile}
    if args.channels_last is not None:
        options["channels_last"] = args.channels_last
    executors = ("per-edge", "batched") if args.executor == "both" else (args.executor,)
    records = measure(selected, device, args.steps, args.warmup, args.quick, options, executors)
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        flags = ", ".join(("" if v else "no-") + k.replace("_", "-") for k, v in options.items()
                          if v or k == "channels_last") or "plain"
        print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {flags}, "
              f"{args.steps} timed steps (median; min-max beside), ratios vs {BASELINE}")
        print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
