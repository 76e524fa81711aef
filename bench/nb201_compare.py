"""Search quality on NAS-Bench-201: several methods, several seeds, one shared budget, looked up in the table.

Every (method, seed) is one ``gradnas search`` run on the nb201 space (a subprocess, so each has its own
thread setting); its genotype is looked up in the NAS-Bench-201 accuracy table (test accuracy on CIFAR-10,
CIFAR-100 and ImageNet16-120, CIFAR-10 rank among the 15,625 cells) and the table is written into
``--results`` (by default docs/results.md, between markers named by ``--tag``, so the rest of the file is
kept) after every run, with a mean ± std row per method and the published numbers of docs/methods.md §9 beside.

The budget is shared: the same epochs, channels, cells, batch size and images for every method. A method's
own schedule is scaled to the budget's epochs in proportion: warm-up epochs (PC-DARTS: 15 of 50) and the
shrinking interval (IS-DARTS: S = 4 steps every 2 of 30 epochs, the last 2 epochs after the last step)
keep their share of the run; a method whose preset batch differs scales its learning rate linearly (PC-DARTS:
0.1 at 256 → 0.025 at 64). Any registered method preset may be named.

    python bench/nb201_compare.py                                   # the table of docs/results.md
    python bench/nb201_compare.py --methods is-darts darts --seeds 0 1 2 --epochs 30 --channels 16 --layers 5
    python bench/nb201_compare.py --published --tag published      # each preset's own settings (GPU)
Finished runs are reused (delete --runs to start over); a killed run is resumed from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gradnas.benchmarks.nb201 import NB201Table
from gradnas.config import SearchConfig
from gradnas.methods import PRESETS
from gradnas.spaces import SPACES
from gradnas.genotypes import format_arch_string, load_genotype
from gradnas.spaces import NB201_OPS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
METHODS = ["is-darts", "i-darts", "s-darts", "darts", "pc-darts", "gdas", "snas", "drnas"]
#: docs/methods.md §9, §14, §15: NB201 test accuracy (CIFAR-10 / CIFAR-100 / ImageNet16-120) as published (GDAS:
#: the NAS-Bench-201 paper; DrNAS: its paper, with progressive partial channels; SNAS: none in its paper).
PUBLISHED = {"is-darts": (94.36, 73.51, 46.34), "i-darts": (93.31, 69.83, 43.84), "s-darts": (70.92, 38.97, 18.41),
             "darts": (54.30, 15.61, 16.32), "pc-darts": (93.41, 67.48, 41.31), "gdas": (93.61, 70.70, 41.71),
             "drnas": (94.36, 73.51, 46.34)}
TOP5 = 93.28  # CIFAR-10 test accuracy of the top 5 % of the 15,625 cells
SKIP_HEAVY = 3  # skip connections (of 6 edges) from which a cell is reported as collapsed, with its weights
NB201_EDGES = ["1←0", "2←0", "2←1", "3←0", "3←1", "3←2"]  # the order of the arch string and the logged weights
NB201_EDGE_KEYS = ["0>1", "0>2", "1>2", "0>3", "1>3", "2>3"]  # the same edges as the log's importance keys


def budget_options(method: str, epochs: int, batch_size: int) -> dict[str, Any]:
    """The method's schedule scaled to ``epochs`` and its learning rate to ``batch_size`` (see the docstring)."""
    preset = {**SPACES["nb201"].defaults, **PRESETS[method]("nb201")}
    scale = epochs / preset.get("epochs", SearchConfig.epochs)
    options: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size}
    if preset.get("arch_warmup_epochs"):
        options["arch_warmup_epochs"] = round(preset["arch_warmup_epochs"] * scale)
    if "shrinking" in preset.get("hooks", []) and preset.get("shrink_interval"):
        options["shrink_interval"] = max(1, round(preset["shrink_interval"] * scale))
    own_batch = preset.get("batch_size", SearchConfig.batch_size)
    if own_batch != batch_size:
        options["lr"] = preset.get("lr", SearchConfig.lr) * batch_size / own_batch
    return options


def option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), value


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.runs) / f"{method}-s{seed}"
    if (out / "genotype.json").is_file() and (out / "time.json").is_file():  # finished before: reuse
        return {"method": method, "seed": seed, "out": out, **json.loads((out / "time.json").read_text())}
    if (out / "checkpoint.pt").is_file():
        cmd = ["search", "--resume", str(out)]
    else:
        options = {"space": "nb201", "method": method, "data": args.data, "seed": seed, "out": str(out),
                   "nb201_table": args.table}
        if not args.published:
            options.update(channels=args.channels, layers=args.layers,
                           **budget_options(method, args.epochs, args.batch_size))
        options.update(args.set)
        cmd = ["search"] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else dict(os.environ)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gradnas", *cmd, "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.communicate()[0]
    if proc.returncode:
        raise RuntimeError(f"{method} seed {seed} failed ({proc.returncode}):\n{output[-3000:]}")
    timing = {"wall_s": round(time.perf_counter() - started, 1)}
    (out / "time.json").write_text(json.dumps(timing))
    return {"method": method, "seed": seed, "out": out, **timing}


def lookup(run: dict[str, Any], table: NB201Table) -> dict[str, Any]:
    genotype = load_genotype(run["out"] / "genotype.json")
    entry = table.lookup(genotype)
    return {**run, "arch": format_arch_string(genotype), "c10": entry.cifar10, "c100": entry.cifar100,
            "in16": entry.imagenet16, "rank": entry.rank_cifar10}


def final_weights(out: Path) -> tuple[str, list[list[float | None]]]:
    """What chose the cell: the importance the last shrinking step ranked by (IS-DARTS's IIM, or S-DARTS's
    architecture weights), else the final selection weights (softmax(α), times softmax(β) with edge
    normalisation)."""
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    measured = [r["importance"]["normal"] for r in records if "importance" in r]
    if measured:
        measure = yaml.safe_load((out / "config.yaml").read_text()).get("importance", "fisher")
        kind = "IIM" if measure == "fisher" else f"importance by {measure}"
        return kind, [[measured[-1].get(f"{edge}:{op}") for op in NB201_OPS] for edge in NB201_EDGE_KEYS]
    return "selection weights", records[-1]["arch"]["normal"]


def skip_heavy(rows: list[dict[str, Any]]) -> list[str]:
    """The runs whose cell is mostly skip connections (DARTS's known collapse), with the final architecture
    weights per edge that chose it."""
    lines = []
    for r in rows:
        skips = r["arch"].count("skip_connect")
        if skips < SKIP_HEAVY:
            continue
        kind, weights = final_weights(r["out"])
        lines += [f"- {r['method']} seed {r['seed']}: {skips} of 6 edges skip; {kind} per edge:", "",
                  "  | edge | " + " | ".join(NB201_OPS) + " |", "  |" + "---|" * (len(NB201_OPS) + 1)]
        lines += [f"  | {edge} | " + " | ".join("–" if w is None else f"{w:.3f}" for w in row) + " |"
                  for edge, row in zip(NB201_EDGES, weights)]
        lines.append("")
    return lines


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "–"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(rows: list[dict[str, Any]], methods: list[str], args: argparse.Namespace) -> str:
    budget = ("each preset's own published settings" if args.published else
              f"{args.epochs} epochs, C={args.channels}, {args.layers} cells per stage ({3 * args.layers} cells), "
              f"batch {args.batch_size}")
    lines = [f"Data: `{Path(args.data).name}`, all training images ({rows[0]['images']:,}) — single-level methods "
             "train on all of them, bilevel ones on two halves. Budget: " + budget + ". "
             f"Threads per run: {args.threads or 'default'}; runs in parallel: {args.jobs}. "
             f"Wall time: {sum(r['wall_s'] for r in rows) / 60:.0f} min of runs, {args.jobs} at a time: about "
             f"{sum(r['wall_s'] for r in rows) / args.jobs / 60:.0f} min for the table.",
             "", "| method | seed | architecture | C10 test | C100 test | IN16-120 test | C10 rank | wall (min) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['seed']} | `{r['arch']}` | {r['c10']:.2f} | {r['c100']:.2f} | "
                     f"{r['in16']:.2f} | {r['rank']} | {r['wall_s'] / 60:.1f} |")
    lines += ["", "| method | runs | C10 test | C100 test | IN16-120 test | runs with C10 ≥ 93.28 (top 5 %) | "
              "published C10 / C100 / IN16-120 test |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        paper = " / ".join(f"{v:.2f}" for v in PUBLISHED[m]) if m in PUBLISHED else "–"
        lines.append(f"| {m} | {len(mine)} | {mean_std([r['c10'] for r in mine])} | "
                     f"{mean_std([r['c100'] for r in mine])} | {mean_std([r['in16'] for r in mine])} | "
                     f"{sum(r['c10'] >= TOP5 for r in mine)}/{len(mine)} | {paper} |")
    collapsed = skip_heavy(rows)
    if collapsed:
        lines += ["", f"Cells with at least {SKIP_HEAVY} skip connections, and the final architecture weights per "
                  "edge (node j ← node i) that chose them (larger is chosen; – an op removed before the last "
                  "measurement):", ""] + collapsed
    settings = {m: {k: v for k, v in budget_options(m, args.epochs, args.batch_size).items()
                    if k not in ("epochs", "batch_size")} for m in methods} if not args.published else {}
    if any(settings.values()):
        lines += ["", "Schedules scaled to the budget: " + "; ".join(
            f"{m}: " + ", ".join(f"{k}={v}" for k, v in s.items()) for m, s in settings.items() if s) + "."]
    if args.set:
        lines += ["", "Set for every run: " + ", ".join(f"{k}={v}" for k, v in args.set) + "."]
    lines += ["", f"Command: `python bench/nb201_compare.py {' '.join(sys.argv[1:])}`"]
    return "\n".join(lines)


def write_results(path: Path, tag: str, title: str, body: str) -> None:
    """Replace the block between this tag's markers (or append it), keeping the rest of the file."""
    begin, end = f"<!-- nb201_compare:{tag}:begin -->", f"<!-- nb201_compare:{tag}:end -->"
    text = path.read_text() if path.is_file() else "# Search quality on NAS-Bench-201\n"
    block = f"{begin}\n## {title}\n\n{body}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, help="method presets (any registered name)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2, help="cells per stage")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--published", action="store_true", help="each preset's own settings, no shared budget")
    parser.add_argument("--data", default=str(SHARED / "cifar10_subset.npz"))
    parser.add_argument("--table", default=str(SHARED / "nb201_accuracy.csv"))
    parser.add_argument("--runs", default="runs/nb201_compare", help="directory of the run directories")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--tag", default="cpu-budget", help="names this table's block in --results")
    parser.add_argument("--title", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (0: torch's default)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", type=option,
                        help="an option for every run, as gradnas search's --key=value (e.g. iim_samples=0)")
    args = parser.parse_args()
    for m in args.methods:
        PRESETS[m]  # an unknown name fails here, before any run
    table = NB201Table.from_path(args.table)
    images = len(np.load(args.data)["y_train"])
    jobs = [(m, s) for m in args.methods for s in args.seeds]
    rows: list[dict[str, Any]] = []
    title = args.title or ("NB201, published settings" if args.published else "NB201, shared CPU budget")
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, m, s, args) for m, s in jobs]
        for (m, s), future in zip(jobs, futures):
            row = {**lookup(future.result(), table), "images": images}
            rows.append(row)
            print(f"{m} seed {s}: {row['arch']}  C10 {row['c10']:.2f}  rank {row['rank']}  "
                  f"({row['wall_s'] / 60:.1f} min)", flush=True)
            write_results(Path(args.results), args.tag, title, render(rows, args.methods, args))


if __name__ == "__main__":
    main()
