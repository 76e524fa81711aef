"""Operations dispatched per search iteration (weight step + architecture step), for every method preset.

On a GPU an eager supernet step is launch-bound: its cost follows the number of kernels, not the arithmetic.
This counts the ATen compute operations one iteration dispatches (``gradnas.profiling.DispatchCounter``: views
and bare allocations excluded), with the model, optimisers and steps built exactly as ``bench/search_step.py``
builds them (SGD and Adam with ``foreach=True``, as both the search and the original code can run). The count
does not depend on the batch size or the device, so the CPU measures what a GPU would launch. Each row is
counted with both supernet executors by default (``--executor``), the per-edge reference and the search's
default, batched (all edges leaving a node at once), and ``×per-edge`` is their ratio.

    python bench/dispatch_count.py                   # every preset, foundation setting (C=16, 8 / 5 cells)
    python bench/dispatch_count.py --rows darts-b64 pc-darts-k4-b64 --order 2 --json
    python bench/dispatch_count.py --quick --top 10  # tiny supernets; the 10 most frequent operators per row
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import torch

from gradnas.config import resolve_config
from gradnas.profiling import DispatchCounter
from gradnas.search.bilevel import ARCH_UPDATES
from search_step import BASELINE, ROWS, Row, prepare


def count(row: Row, order: int, quick: bool, executor: str = "per-edge", batch: int | None = None) -> dict:
    bilevel = ARCH_UPDATES[resolve_config({"space": row.space, "method": row.method}).arch_update].uses_validation
    steps = ("weight", f"arch-{order}") if bilevel else ("weight",)  # single-level methods have no arch step
    overrides = {**row.overrides, **({"batch_size": batch} if batch else {})}
    measurements = prepare(Row(row.name, row.space, row.method, overrides, steps), torch.device("cpu"), quick,
                           {"channels_last": True, "executor": executor})
    counters = dispatched({m.step.split("-")[0]: m.run for m in measurements}, measurements[0].optimizers)
    record = {"row": row.name, "space": row.space, "method": row.method, "executor": executor, "order": order}
    record.update({f"{step}_ops": counter.total for step, counter in counters.items()})
    totals = DispatchCounter()
    for counter in counters.values():
        totals.by_op.update(counter.by_op)
    record["iteration_ops"] = totals.total
    record["by_op"] = dict(totals.by_op.most_common())
    return record


def dispatched(steps: dict[str, Callable[[], Any]], optimizers: list[torch.optim.Optimizer]) -> dict[str, DispatchCounter]:
    """The ops each step dispatches, counted on its second run (optimiser state exists from the first on), with
    the optimisers' ``foreach`` implementations, as a GPU runs them by default; their setting is restored after."""
    groups = [(group, group.get("foreach")) for opt in optimizers for group in opt.param_groups]
    counters = {name: DispatchCounter() for name in steps}
    try:
        for group, _ in groups:
            group["foreach"] = True
        for run in steps.values():
            run()
        for name, run in steps.items():
            with counters[name]:
                run()
    finally:
        for group, foreach in groups:
            group["foreach"] = foreach
    return counters


def main(argv: list[str] | None = None) -> int:
    names = [r.name for r in ROWS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", choices=names, default=names, metavar="ROW",
                   help=f"rows to count (the baseline {BASELINE} is always added): {', '.join(names)}")
    p.add_argument("--order", type=int, choices=(1, 2), default=1, help="order of the architecture step")
    p.add_argument("--quick", action="store_true", help="tiny supernets: a smoke run")
    p.add_argument("--top", type=int, default=0, help="also print each row's N most frequent operators")
    p.add_argument("--executor", choices=("both", "per-edge", "batched"), default="both",
                   help="supernet executor(s) to count (default: both, with their ratio)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of every row (default: the row's own); the count does not depend on it, and a "
                        "small one counts in a fraction of the time")
    p.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")
    args = p.parse_args(argv)
    rows = [r for r in ROWS if r.name == BASELINE or r.name in args.rows]
    executors = ("per-edge", "batched") if args.executor == "both" else (args.executor,)
    records = [count(r, args.order, args.quick, executor, args.batch) for r in rows for executor in executors]
    base = {r["executor"]: r["iteration_ops"] for r in records if r["row"] == BASELINE}
    per_edge = {r["row"]: r["iteration_ops"] for r in records if r["executor"] == "per-edge"}
    for r in records:
        r["ratio_vs_baseline"] = round(r["iteration_ops"] / base[r["executor"]], 4)
        if r["executor"] != "per-edge" and r["row"] in per_edge:
            r["ratio_vs_per_edge"] = round(r["iteration_ops"] / per_edge[r["row"]], 4)
    if args.json:
        for r in records:
            print(json.dumps(r))
        return 0
    print(f"torch {torch.__version__}, ATen compute ops per search iteration (weight step + arch step of order "
          f"{args.order}), views and allocations excluded, foreach optimisers; ratios vs {BASELINE} (same executor) "
          f"and vs the per-edge executor (same row)")
    print(f"{'row':22} {'executor':8} {'weight':>8} {'arch':>8} {'iteration':>10} {'×base':>7} {'×per-edge':>9}")
    for r in records:
        arch, vs = r.get("arch_ops", 0), r.get("ratio_vs_per_edge")
        print(f"{r['row']:22} {r['executor']:8} {r['weight_ops']:>8} {arch:>8} {r['iteration_ops']:>10} "
              f"{r['ratio_vs_baseline']:>7.3f} {'-' if vs is None else f'{vs:.3f}':>9}")
        if args.top:
            print("    " + ", ".join(f"{op} {n}" for op, n in list(r["by_op"].items())[:args.top]))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)  # counts do not depend on threads; one keeps the run light on shared cores
    sys.exit(main())
