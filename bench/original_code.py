"""The original DARTS and PC-DARTS code's search iteration beside gradnas's, in one process, on the CPU.

Each row builds the authors' search network and ``Architect`` from their public repositories, quark0/darts
(``cnn/model_search.py``, ``cnn/architect.py``) and yuhuixu1993/PC-DARTS (``model_search.py``, ``architect.py``, K=4),
and gradnas's supernet of the same method under both executors, ``batched`` and ``per-edge``, built as
``bench/search_step.py`` builds it. An iteration is the first-order architecture step on a validation batch (their
``Architect.step(..., unrolled=False)``; gradnas's ``Bilevel.arch_step``) and then the weight step (their training
loop's zero_grad, forward, backward, gradient clip, SGD step; gradnas's ``weight_step``), on random 32×32
CIFAR-shaped batches of 10 classes. Both sides use the originals' ``train_search.py`` settings: SGD momentum 0.9,
weight decay 3e-4, clip 5, lr 0.025 (DARTS) or 0.1 (PC-DARTS); Adam betas (0.5, 0.999), weight decay 1e-3, lr 3e-4
or 6e-4. The loop's bookkeeping (accuracy meters, logging) is left out on both sides.

Per row and side it prints the supernet's weight and architecture parameter counts (``size`` says whether they
equal the original's: the same supernet), the ATen ops each step dispatches (counted as ``bench/dispatch_count.py``
counts them: foreach optimisers, views excluded) and the median wall and process CPU milliseconds per iteration,
timed round-robin (original, batched, per-edge: one iteration each per round), so load on shared cores hits every
side alike. ``×orig`` is the original's figure over the side's: above 1, gradnas is faster. Each side runs in its own
default memory layout (gradnas channels-last, its search default; the original contiguous). ``--ops N`` then times
one more iteration per side operator by operator (``bench/step_ops.py``'s timer) and lists each row's N costliest
operators side by side: where the batched step still loses time against the original code.

The original code was written for old PyTorch on a GPU and runs unchanged: while it is imported and built,
``.cuda()`` returns the tensor or module it is called on. It is not part of this project; fetch it into the
git-ignored ``bench/.original``:

    git clone https://github.com/quark0/darts bench/.original/darts
    git clone https://github.com/yuhuixu1993/PC-DARTS bench/.original/pc-darts

    python bench/original_code.py --steps 5 --threads 1
    python bench/original_code.py --rows darts --steps 1 --threads 1 --ops 20
    python bench/original_code.py --rows pc-darts --json
    python bench/original_code.py --quick          # tiny supernets, batch 2, one round: a smoke run
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from dispatch_count import dispatched
from search_step import FULL, IMAGE_SIZE, NUM_CLASSES, QUICK, Row, prepare, timed
from step_ops import OpTimer

ORIGINAL = Path(__file__).resolve().parent / ".original"
EXECUTORS = ("batched", "per-edge")
# The settings both originals' train_search.py share; lr and arch_lr are per method.
SHARED = {"momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0, "arch_betas": [0.5, 0.999],
          "arch_weight_decay": 1e-3}


@dataclass(frozen=True)
class Method:
    name: str  # the row, gradnas's method preset
    default: Path  # the checkout's folder holding model_search.py and architect.py
    lr: float
    arch_lr: float
    overrides: dict[str, Any] = field(default_factory=dict)


METHODS = {"darts": Method("darts", ORIGINAL / "darts" / "cnn", 0.025, 3e-4),
           "pc-darts": Method("pc-darts", ORIGINAL / "pc-darts", 0.1, 6e-4, {"partial_k": 4})}


@dataclass
class Side:
    name: str
    steps: dict[str, Callable[[], Any]]  # "arch", then "weight": one iteration
    optimizers: list[torch.optim.Optimizer]  # the weights', then the architecture's
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    operators: OpTimer | None = None  # one iteration timed operator by operator (--ops)

    def run(self) -> None:
        for step in self.steps.values():
            step()

    def sizes(self) -> tuple[int, ...]:
        return tuple(sum(p.numel() for g in opt.param_groups for p in g["params"]) for opt in self.optimizers)


@contextmanager
def cuda_in_place() -> Iterator[None]:
    """``.cuda()`` leaves a tensor or module where it is: the original code calls it on all it builds."""
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved


def load(directory: Path) -> tuple[ModuleType, ModuleType]:
    """A checkout's model_search and architect modules. Both repositories name their modules alike (operations,
    genotypes, ...), so each checkout is imported from its own folder and its modules leave sys.modules after."""
    names = ("model_search", "architect", "operations", "genotypes")
    for name in names:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(directory))
    try:
        with cuda_in_place():
            return importlib.import_module("model_search"), importlib.import_module("architect")
    finally:
        sys.path.remove(str(directory))
        for name in names:
            sys.modules.pop(name, None)


def original(method: Method, directory: Path, batch: int, size: dict[str, int]) -> Side:
    model_search, architect = load(directory)
    torch.manual_seed(0)
    criterion = nn.CrossEntropyLoss()
    with cuda_in_place():
        model = model_search.Network(size["channels"], NUM_CLASSES, size["layers"], criterion)
        arch = architect.Architect(model, SimpleNamespace(
            momentum=SHARED["momentum"], weight_decay=SHARED["weight_decay"], arch_learning_rate=method.arch_lr,
            arch_weight_decay=SHARED["arch_weight_decay"]))
    optimizer = torch.optim.SGD(model.parameters(), method.lr, momentum=SHARED["momentum"],
                                weight_decay=SHARED["weight_decay"])
    (x, y), (xv, yv) = [(torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE), torch.randint(0, NUM_CLASSES, (batch,)))
                        for _ in range(2)]
    model.train()

    def weight_step() -> None:  # the body of their train_search.py's train(), less the meters
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), SHARED["grad_clip"])
        optimizer.step()

    return Side("original", {"arch": lambda: arch.step(x, y, xv, yv, method.lr, optimizer, unrolled=False),
                             "weight": weight_step}, [optimizer, arch.optimizer])


def gradnas(method: Method, executor: str, batch: int, size: dict[str, int]) -> Side:
    overrides = {**size, **method.overrides, **SHARED, "lr": method.lr, "arch_lr": method.arch_lr, "batch_size": batch}
    steps = {m.step: m for m in prepare(Row(method.name, "darts", method.name, overrides, ("weight", "arch-1")),
                                        torch.device("cpu"), False, {"executor": executor})}
    return Side(executor, {"arch": steps["arch-1"].run, "weight": steps["weight"].run}, steps["weight"].optimizers)


def measure(rows: dict[str, Path], batch: int, steps: int, quick: bool, ops: bool = False) -> list[dict[str, Any]]:
    """One record per row and side; ``rows`` maps each method to its original checkout. ``ops``: also one iteration
    per side timed operator by operator, after the timed rounds."""
    size = QUICK["darts"] if quick else FULL["darts"]
    sides = {name: [original(METHODS[name], directory, batch, size)]
             + [gradnas(METHODS[name], executor, batch, size) for executor in EXECUTORS]
             for name, directory in rows.items()}
    # counted first: the two runs per step that counting takes are the timing's warm-up
    counts = {id(side): dispatched(side.steps, side.optimizers) for row in sides.values() for side in row}
    cpu = torch.device("cpu")
    for _ in range(steps):  # round-robin: contention on shared cores spreads over every side
        for row in sides.values():
            for side in row:
                wall, cpu_ms = timed(side, cpu)
                side.times_ms.append(wall)
                side.cpu_ms.append(cpu_ms)
    for row in sides.values():
        for side in row if ops else ():
            with OpTimer() as side.operators:
                side.run()
    records = []
    for name, row in sides.items():
        reference = None
        for side in row:
            weights, arch = side.sizes()
            ops = {f"{step}_ops": counter.total for step, counter in counts[id(side)].items()}
            r = {"row": name, "side": side.name, "batch": batch, "threads": torch.get_num_threads(),
                 "steps": steps, "weights": weights, "arch_parameters": arch, **ops,
                 "iteration_ops": sum(ops.values()), "ms_per_iteration": round(statistics.median(side.times_ms), 3),
                 "ms_min": round(min(side.times_ms), 3), "ms_max": round(max(side.times_ms), 3),
                 "cpu_ms_per_iteration": round(statistics.median(side.cpu_ms), 3)}
            reference = reference or r
            r["same_supernet"] = (weights, arch) == (reference["weights"], reference["arch_parameters"])
            for key, label in (("iteration_ops", "ops"), ("ms_per_iteration", "wall"), ("cpu_ms_per_iteration", "cpu")):
                r[f"original_over_{label}"] = round(reference[key] / r[key], 4)
            if side.operators is not None:
                r["operators"] = {op: [round(1e3 * seconds, 3), side.operators.calls[op]]
                                  for op, seconds in side.operators.seconds.most_common()}
            records.append(r)
    return records


def table(records: list[dict[str, Any]]) -> str:
    lines = [f"{'row':9} {'side':9} {'weights':>9} {'arch':>5} {'size':>5} {'arch ops':>9} {'weight ops':>10} "
             f"{'iter ops':>9} {'ms/iter':>9} {'(min-max)':>13} {'cpu ms':>9} {'×orig ops':>9} {'×orig wall':>10} "
             f"{'×orig cpu':>9}"]
    for r in records:
        spread = f"({r['ms_min']:.0f}-{r['ms_max']:.0f})"
        lines.append(f"{r['row']:9} {r['side']:9} {r['weights']:>9} {r['arch_parameters']:>5} "
                     f"{'=' if r['same_supernet'] else 'DIFF':>5} {r['arch_ops']:>9} {r['weight_ops']:>10} "
                     f"{r['iteration_ops']:>9} {r['ms_per_iteration']:>9.1f} {spread:>13} "
                     f"{r['cpu_ms_per_iteration']:>9.1f} {r['original_over_ops']:>9.2f} "
                     f"{r['original_over_wall']:>10.2f} {r['original_over_cpu']:>9.2f}")
    return "\n".join(lines)


def operator_table(records: list[dict[str, Any]], top: int) -> str:
    """Per row, the ``top`` operators by their largest time on any side: ms and calls per side in one iteration."""
    lines = []
    for row in dict.fromkeys(r["row"] for r in records):
        sides = {r["side"]: r["operators"] for r in records if r["row"] == row}
        totals = ", ".join(f"{side} {sum(ms for ms, _ in ops.values()):.0f} ms" for side, ops in sides.items())
        lines += ["", f"{row}: one iteration timed operator by operator ({totals}; the timing adds to each call)",
                  f"{'operator':32}" + "".join(f" {side + ' ms':>12} {'calls':>6}" for side in sides)
                  + f" {'×orig/batched':>13}"]
        keys = sorted(set().union(*sides.values()), key=lambda k: -max(ops.get(k, [0])[0] for ops in sides.values()))
        for key in keys[:top]:
            cells = [ops.get(key, [0.0, 0]) for ops in sides.values()]
            original, batched = sides["original"].get(key, [0.0])[0], sides["batched"].get(key, [0.0])[0]
            ratio = f"{original / batched:.2f}" if batched else "-"
            lines.append(f"{key[:32]:32}" + "".join(f" {ms:>12.1f} {calls:>6}" for ms, calls in cells) + f" {ratio:>13}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, method in METHODS.items():
        p.add_argument(f"--{name}", type=Path, default=method.default, metavar="DIR",
                       help=f"the original {name} checkout's folder with model_search.py (default: {method.default})")
    p.add_argument("--rows", nargs="+", choices=list(METHODS), default=list(METHODS), help="methods to compare")
    p.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--steps", type=int, default=5, help="timed rounds, one iteration per side each (median reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: torch's); 1 is far steadier on cores shared with other jobs")
    p.add_argument("--ops", type=int, default=0, metavar="N",
                   help="also time one iteration per side operator by operator (bench/step_ops.py's timer) and "
                        "list each row's N costliest operators, side by side")
    p.add_argument("--json", action="store_true", help="one JSON object per row and side instead of a table")
    p.add_argument("--quick", action="store_true", help="tiny supernets (C=8, 3 cells), batch 2, one round: a smoke run")
    args = p.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or (args.threads is not None and args.threads < 1):
        p.error("--batch, --steps and --threads must be >= 1")
    rows = {name: getattr(args, name.replace("-", "_")) for name in args.rows}
    for name, directory in rows.items():
        if not (directory / "model_search.py").is_file() or not (directory / "architect.py").is_file():
            p.error(f"{directory} holds no original {name} code (model_search.py, architect.py); "
                    f"see the docstring of {Path(__file__).name} for the git clone")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    batch, steps = (2, 1) if args.quick else (args.batch, args.steps)
    records = measure(rows, batch, steps, args.quick, args.ops > 0)
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, batch {batch}, {steps} rounds "
              f"(median; min-max beside); an iteration is a first-order architecture step and a weight step; "
              f"×orig = the original's figure / the side's")
        print(table(records))
        if args.ops:
            print(operator_table(records, args.ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
