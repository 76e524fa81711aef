"""The ``gradnas`` command line: search, show, bench.

Every search option comes from the :class:`SearchConfig` fields, so the command line, config files and
the Python API stay one set of names. Bad input prints one ``gradnas: error:`` line and exits 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
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
}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(SearchConfig)
    for f in dataclasses.fields(SearchConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if isinstance(kind, types.UnionType) else kind
        help_text = HELP.get(f.name, f.name.replace("_", " "))
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
    return parser


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
    result = search(config, resume=bool(args.resume))
    print(f"genotype: {genotype_text(result.genotype)}")
    print(f"saved: {result.paths['genotype']}")
    if "nb201" in result.paths:
        print(result.paths["nb201"].read_text().rstrip())
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

    table = NB201Table.from_path(args.nb201_table)
    genotype = parse_genotype(args.arch)
    checkpoint = Path(args.arch) / "checkpoint.pt"
    if checkpoint.is_file():  # a search run: rank its cell and the cells its final weights favour
        from .search.loop import final_edge_probabilities
        print(search_report(table, genotype, final_edge_probabilities(checkpoint), args.top_k))
    else:
        print(format_entry(table.lookup(genotype)))
    return 0


COMMANDS = {"search": cmd_search, "show": cmd_show, "bench": cmd_bench}


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
