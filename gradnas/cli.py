"""The ``gradnas`` command line: search, show, bench.

Every search option comes from the :class:`SearchConfig` fields, so the command line, config files and
the Python API stay one set of names. Bad input prints one ``gradnas: error:`` line and exits 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from pathlib import Path

from . import __version__
from .config import PRESETS, SearchConfig, resolve_config
from .errors import GradnasError
from .genotypes import genotype_text

HELP = {
    "space": "search space: darts or nb201", "method": "method preset (sets the published defaults)",
    "data": "dataset: digits (built in), cifar10, cifar100, a .npz file or an image-folder directory",
    "out": "run directory", "order": "DARTS approximation order (1 or 2)", "layers": "cells (DARTS) or cells per stage (NB201)",
    "steps_per_epoch": "cap on iterations per epoch", "nb201_table": "NAS-Bench-201 accuracy table (or $GRADNAS_NB201_TABLE)",
    "skip_dropout": "dropout on the skip_connect branch during search (DNAS 0.2; 0: off)",
    "zero_one_weight": "weight of the zero-one loss on σ(α), σ(γ) (DNAS 10; 0: off)",
    "beta_softmax": "DNAS: softmax of β over all edges of a cell (layer) or over each node's edges (node)",
    "groups": "G-DARTS-A: channel groups M of every edge",
    "group_mode": "G-DARTS-A: exact (all groups through one shared op built for C/M channels) or split "
                  "(a full-width op whose output is split into groups for attention)",
    "conv_groups": "G-DARTS-A: groups of every conv inside the candidate ops",
    "partial_sampling": "PC-DARTS channels through the ops: first (code), random (paper) or all (G-PC-DARTS-A)",
    "cutout": "cutout square's side as a fraction of the image side (0.5: 16 px on 32-px CIFAR; 0: off)",
}


def _add_config_options(parser: argparse.ArgumentParser, cls: type = SearchConfig, helps: dict[str, str] = HELP,
                        skip: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if isinstance(kind, types.UnionType) else kind
        help_text = helps.get(f.name, f.name.replace("_", " "))
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            parser.add_argument(flag, nargs="+", type=item, default=None, metavar=item.__name__.upper(), help=help_text)
        else:
            parser.add_argument(flag, type=base, default=None, metavar=base.__name__.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from . import methods  # noqa: F401  (registers the presets listed in the help)
    parser = argparse.ArgumentParser(prog="gradnas", description="Differentiable neural architecture search.")
    parser.add_argument("--version", action="version", version=f"gradnas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="search an architecture",
                       description=f"Run a search. Methods: {', '.join(PRESETS.names())}.")
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of options (overridden by flags)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--dry-run", action="store_true",
                   help="build the supernet, take one step, print its size and memory, and stop")
    _add_config_options(p)

    p = sub.add_parser("show", help="print a genotype, its evaluation-network size, and draw its cells")
    p.add_argument("genotype", help="JSON file, run directory, DARTS text form, NB201 arch string or published name")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet"])
    p.add_argument("--out", default=None, help="directory for the diagrams (default: beside a file, else .)")

    p = sub.add_parser("bench", help="benchmark look-ups")
    bench = p.add_subparsers(dest="benchmark", required=True)
    b = bench.add_parser("nb201", help="NAS-Bench-201 accuracies and rank of an architecture")
    b.add_argument("arch", help="NB201 arch string, genotype file or run directory")
    b.add_argument("--nb201-table", default=None, help="accuracy table CSV (or $GRADNAS_NB201_TABLE)")
    b.add_argument("--top-k", type=int, default=5, help="with a run directory: the k most probable architectures")
    b.add_argument("--nats-dir", nargs="?", const="", default=None, metavar="DIR",
                   help="read the official NATS-Bench topology files instead of the table (directory with "
                        "NATS-tss-v1_0-3ffb9-simple; without DIR: $TORCH_HOME, default ~/.torch)")
    b.add_argument("--dataset", nargs="+", default=["cifar10", "cifar100", "imagenet16-120"],
                   help="with --nats-dir: cifar10, cifar100, imagenet16-120")
    b.add_argument("--epochs", nargs="+", type=int, default=[12, 200], help="with --nats-dir: 12 and/or 200")

    from .train.export import FORMATS
    from .train.recipes import HELP as TRAIN_HELP, RECIPES, TrainConfig
    p = sub.add_parser("train", help="train a found architecture from scratch",
                       description=f"Train a genotype with a published recipe ({', '.join(RECIPES.names())}).")
    p.add_argument("genotype", nargs="?", help=TRAIN_HELP["genotype"])
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of options (overridden by flags)")
    p.add_argument("--resume", metavar="DIR", help="continue the training run in DIR from its last checkpoint")
    _add_config_options(p, TrainConfig, TRAIN_HELP, skip=("genotype",))

    p = sub.add_parser("eval", help="test accuracy, loss, parameters and multiply-accumulates of a trained model")
    p.add_argument("model", metavar="DIR", help="training run directory (or its model.pt)")
    p.add_argument("--data", default=None, help="dataset to test on (default: the one it was trained on)")
    p.add_argument("--data-root", default=None, help="where cifar10/cifar100 live")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("export", help="export a trained model for deployment")
    p.add_argument("model", metavar="DIR", help="training run directory (or its model.pt)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, metavar="FILE")
    return parser


def main_process() -> bool:
    """False on the ranks other than 0 of a torchrun launch: they train but do not report."""
    return int(os.environ.get("RANK", "0")) == 0


def cmd_search(args: argparse.Namespace) -> int:
    from .search.loop import search

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(SearchConfig)}
    if args.resume:
        ignored = sorted(k for k, v in overrides.items() if v is not None and k != "progress")
        if ignored or args.config:
            logging.warning("gradnas: resuming with the run's saved configuration; ignoring %s",
                            ", ".join(["--" + k.replace("_", "-") for k in ignored] + (["--config"] if args.config else [])))
        overrides = {"out": args.resume, "progress": args.progress}
    config = resolve_config(overrides, args.config if not args.resume else None)
    if args.dry_run:
        return _dry_run(config)
    result = search(config, resume=bool(args.resume))
    if not main_process():
        return 0
    print(f"genotype: {genotype_text(result.genotype)}")
    print(f"saved: {result.paths['genotype']}")
    if "nb201" in result.paths:
        print(result.paths["nb201"].read_text().rstrip())
    return 0


def _dry_run(config) -> int:
    from .profiling import format_bytes
    from .search.loop import Searcher

    report = Searcher(config).dry_run()
    print(f"supernet: {report['weights']:,} weights, {report['arch_parameters']:,} architecture parameters")
    print(f"one step at batch {report['batch_size']} on {report['device']}: {report['step_seconds']:.2f} s, "
          f"activations saved for backward {format_bytes(report['activation_bytes'])}")
    if "peak_bytes" in report:
        print(f"peak memory (measured): {format_bytes(report['peak_bytes'])}")
    else:
        print(f"peak memory (estimated: activations + weights, gradients, optimiser state): "
              f"{format_bytes(report['estimated_peak_bytes'])}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .genotypes import parse_genotype
    from .models import build_eval_network, count_parameters
    from .viz import draw_genotype

    genotype = parse_genotype(args.genotype)
    print(genotype_text(genotype))
    net = build_eval_network(genotype, args.dataset)
    print(f"evaluation network ({args.dataset}): {count_parameters(net):,} parameters (auxiliary head excluded)")
    source = Path(args.genotype)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent if source.exists() else Path("."))
    for path in draw_genotype(genotype, out):
        print(f"diagram: {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks.nb201 import NB201Table, format_entry, search_report
    from .genotypes import parse_genotype

    genotype = parse_genotype(args.arch)
    if args.nats_dir is not None:  # the official benchmark files instead of the accuracy table
        from .benchmarks.nats import NATSBench, format_nats
        nats = NATSBench(args.nats_dir or None)
        print(format_nats(nats.query(genotype, d, e) for d in args.dataset for e in args.epochs))
        return 0
    table = NB201Table.from_path(args.nb201_table)
    checkpoint = Path(args.arch) / "checkpoint.pt"
    if checkpoint.is_file():  # a search run: rank its cell and the cells its final weights favour
        from .search.loop import final_edge_probabilities
        print(search_report(table, genotype, final_edge_probabilities(checkpoint), args.top_k))
    else:
        print(format_entry(table.lookup(genotype)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train
    from .train.recipes import configure_training

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    overrides["genotype"] = args.genotype
    dataset = None
    if args.resume:
        ignored = sorted(k for k, v in overrides.items() if v is not None and k != "progress")
        if ignored or args.config:
            logging.warning("gradnas: resuming with the run's saved configuration; ignoring %s",
                            ", ".join(["--" + k.replace("_", "-") for k in ignored] + (["--config"] if args.config else [])))
        config = TrainConfig(out=args.resume, progress=args.progress if args.progress is not None else True)
    else:
        config, dataset = configure_training(overrides, args.config)
    result = train(config, dataset, resume=bool(args.resume))
    if not main_process():
        return 0
    m = result.metrics
    print(f"genotype: {genotype_text(result.genotype)}")
    print(f"test top-1 {m['test_acc']:.2f}%  loss {m['test_loss']:.4f}  parameters {m['params']:,}  "
          f"multiply-accumulates {m['macs']:,}")
    print(f"saved: {result.paths['model']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .train.evaluate import evaluate_saved, format_metrics

    metrics = evaluate_saved(args.model, args.data, args.data_root, args.batch_size, args.device)
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .train.export import export_model

    result = export_model(args.model, args.format, args.out)
    meta = result.meta
    print(f"exported: {result.path} (input: N×{meta['in_channels']}×{meta['image_size']}×{meta['image_size']} "
          f"float, normalised with mean {meta['mean']} and std {meta['std']}; output: logits)")
    if result.max_abs_diff is not None:
        print(f"checked: largest difference from the PyTorch model on a random batch {result.max_abs_diff:.2e}")
    return 0


COMMANDS = {"search": cmd_search, "show": cmd_show, "bench": cmd_bench, "train": cmd_train, "eval": cmd_eval,
            "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except GradnasError as err:
        print(f"gradnas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradnas: interrupted; resume with --resume DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
