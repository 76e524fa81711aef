"""Where a search step's CPU time goes: the time of every ATen operator in one step, per executor, side by side.

Each dispatched operator is timed as it runs (on the CPU an op returns when its kernel is done, so this is its
run time; on a GPU it would only be the launch). One step per (row, step kind, executor) after two untimed
ones, built as ``bench/search_step.py`` builds them; the table lists the operators by the larger of the two
times, with the per-edge / batched ratio. The timing adds a little Python per op, so the totals run above the
untimed step's: read the table for where the executors differ, and ``bench/search_step.py`` for their speed.

    python bench/step_ops.py --rows darts-b64 --kinds weight arch-1 --threads 1
    python bench/step_ops.py --rows pc-darts-k4-b64 --top 25 --by-shape
"""
from __future__ import annotations

import argparse
import collections
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from search_step import ROWS, Row, prepare

EXECUTORS = ("per-edge", "batched")


class OpTimer(TorchDispatchMode):
    """Seconds and calls per operator (or per operator and input shape) of what runs inside the block."""

    def __init__(self, by_shape: bool = False):
        super().__init__()
        self.by_shape = by_shape
        self.seconds: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        key = func.overloadpacket.__name__
        if self.by_shape and args and isinstance(args[0], torch.Tensor):
            key = f"{key} {tuple(args[0].shape)}"
        self.seconds[key] += time.perf_counter() - start
        self.calls[key] += 1
        return out


def time_ops(row: Row, step: str, executor: str, by_shape: bool, quick: bool = False) -> OpTimer:
    measurement = prepare(Row(row.name, row.space, row.method, row.overrides, (step,)), torch.device("cpu"),
                          quick, {"channels_last": True, "executor": executor})[0]
    measurement.run()
    measurement.run()
    with OpTimer(by_shape) as timer:
        measurement.run()
    return timer


def table(row: str, step: str, timers: dict[str, OpTimer], top: int) -> list[str]:
    per_edge, batched = timers["per-edge"], timers["batched"]
    keys = sorted(set(per_edge.seconds) | set(batched.seconds),
                  key=lambda k: -max(per_edge.seconds[k], batched.seconds[k]))
    totals = {e: sum(t.seconds.values()) for e, t in timers.items()}
    calls = {e: sum(t.calls.values()) for e, t in timers.items()}
    lines = [f"{row} {step}: per-edge {totals['per-edge']:.2f} s in {calls['per-edge']} operator calls (views included), "
             f"batched {totals['batched']:.2f} s in {calls['batched']} (× {totals['per-edge'] / totals['batched']:.2f})",
             f"{'operator':48s} {'per-edge ms':>12s} {'calls':>6s} {'batched ms':>11s} {'calls':>6s} {'×':>6s}"]
    for k in keys[:top]:
        a, b = per_edge.seconds[k] * 1e3, batched.seconds[k] * 1e3
        ratio = f"{a / b:6.2f}" if b else "     -"
        lines.append(f"{k[:48]:48s} {a:12.1f} {per_edge.calls[k]:6d} {b:11.1f} {batched.calls[k]:6d} {ratio}")
    return lines


def main(argv: list[str] | None = None) -> int:
    names = [r.name for r in ROWS]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", choices=names, default=["darts-b64"], metavar="ROW",
                   help=f"rows: {', '.join(names)}")
    p.add_argument("--kinds", nargs="+", default=["weight", "arch-1"], choices=["weight", "arch-1", "arch-2"])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, the steadiest)")
    p.add_argument("--top", type=int, default=15, help="operators listed per table")
    p.add_argument("--by-shape", action="store_true", help="one line per operator and input shape")
    p.add_argument("--quick", action="store_true", help="tiny supernets, 16 px, batch / 8: a smoke run")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for row in (r for r in ROWS if r.name in args.rows):
        for step in (k for k in args.kinds if k in row.steps):
            timers = {e: time_ops(row, step, e, args.by_shape, args.quick) for e in EXECUTORS}
            print("\n".join(table(row.name, step, timers, args.top)) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
