"""The ``gradnas`` command line: search, train, eval, export, show, plot, bench.

Every search option comes from the :class:`SearchConfig` fields, so the command line, config files and
the Python API stay one set of names. Bad input prints one ``gradnas: error:`` line and exits 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
import types
import typing
import warnings
from pathlib import Path

from . import __version__
from .config import RESUMABLE, SearchConfig, given_options, resolve_config
from .options import PARTS
from .errors import GradnasError, first_line
from .genotypes import genotype_text

def _search_options() -> tuple[dict[str, str], dict[str, tuple[str, ...]], dict[str, list[str]]]:
    """Help texts, groups (one per part) and registry choices of the search flags, from the parts' declarations."""
    declared = [o for options in PARTS.values() for o in options]
    groups = {part: tuple(o.name for o in options) for part, options in PARTS.items() if options}
    return ({o.name: o.help for o in declared}, groups, {o.name: o.choices() for o in declared if o.choices})


def _default(f: dataclasses.Field) -> object:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


def _add_config_options(parser: argparse.ArgumentParser, cls: type, helps: dict[str, str],
                        skip: tuple[str, ...] = (), groups: dict[str, tuple[str, ...]] | None = None,
                        choices: dict[str, list[str]] | None = None) -> None:
    """One flag per field of ``cls``, its help text followed by the default (argparse defaults stay None, so
    only flags given explicitly override the config file and presets)."""
    hints = typing.get_type_hints(cls)
    sections = {name: parser.add_argument_group(f"{name} options") for name in groups or {}}
    where = {field: sections[name] for name, members in (groups or {}).items() for field in members}
    fallback = sections.get("run", parser)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if isinstance(kind, types.UnionType) else kind
        text = helps.get(f.name, f.name.replace("_", " ")).replace("{choices}", ", ".join((choices or {}).get(f.name, [])))
        default = _default(f)
        help_text = (f"{text} (default: {default})" if default is not None and f.name not in ("layers", "selection")
                     else text).replace("%", "%%")
        group = where.get(f.name, fallback)
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            group.add_argument(flag, nargs="+", type=item, default=None, metavar=item.__name__.upper(), help=help_text)
        else:
            group.add_argument(flag, type=base, default=None, metavar=base.__name__.upper(), help=help_text)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as gradnas's one line (the subcommands inherit it)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"gradnas: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .methods import PRESETS
    parser = _Parser(prog="gradnas", description="Differentiable neural architecture search.")
    parser.add_argument("--version", action="version", version=f"gradnas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (from the working directory or sys.path), e.g. one that registers "
                             "its own ops in gradnas.spaces.OPS; repeatable")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="search an architecture",
                       description=f"Run a search. Methods: {', '.join(PRESETS.names())}. Defaults shown are "
                                   "DARTS's on the darts space; --space and --method change them (the effective "
                                   "values are saved in RUN/config.yaml).")
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of options (overridden by flags)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint (options that "
                   f"may change: {_flags(RESUMABLE)})")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    p.add_argument("--dry-run", action="store_true",
                   help="build the supernet, take one step, print its size and memory, and stop")
    helps, groups, choices = _search_options()
    _add_config_options(p, SearchConfig, helps, groups=groups, choices=choices)

    p = sub.add_parser("show", help="print a genotype, its evaluation-network size, and draw its cells")
    p.add_argument("genotype", help="JSON file, run directory, DARTS text form, NB201 arch string or published name")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet"],
                   help="evaluation network whose parameters are counted (default: cifar10)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the cell diagrams (default: the run directory or beside the file; "
                        "names and text forms are drawn only with --out)")

    p = sub.add_parser("plot", help="plot a search run's architecture weights (and importance) over the run",
                       description="Heat-maps of the selection weights per cell type after the last epoch and at "
                                   "epochs over the run, one line per op for every edge, a grid of every cell "
                                   "for per-cell searches (DNAS), and IS-DARTS's importance likewise.")
    p.add_argument("run", metavar="RUN", help="search run directory (holds log.jsonl and config.yaml)")
    p.add_argument("--out", default=None, metavar="DIR", help="directory for the PNG files (default: RUN/plots)")

    p = sub.add_parser("bench", help="benchmark look-ups")
    bench = p.add_subparsers(dest="benchmark", required=True)
    b = bench.add_parser("nb201", help="NAS-Bench-201 accuracies and rank of an architecture")
    b.add_argument("arch", help="NB201 arch string, genotype file or run directory")
    b.add_argument("--nb201-table", default=None, metavar="FILE",
                   help="accuracy table, .csv or .npz (default: $GRADNAS_NB201_TABLE, else the packaged one)")
    b.add_argument("--top-k", type=int, default=5,
                   help="with a run directory: the k most probable architectures (default: 5)")
    b.add_argument("--nats-dir", nargs="?", const="", default=None, metavar="DIR",
                   help="read the official NATS-Bench topology files instead of the table (directory with "
                        "NATS-tss-v1_0-3ffb9-simple; without DIR: $TORCH_HOME, default ~/.torch)")
    b.add_argument("--dataset", nargs="+", default=["cifar10", "cifar100", "imagenet16-120"],
                   help="with --nats-dir: any of cifar10, cifar100, imagenet16-120 (default: all)")
    b.add_argument("--epochs", nargs="+", type=int, default=[12, 200], help="with --nats-dir: 12 and/or 200 (default: both)")

    from .train.export import FORMATS
    from .train.recipes import HELP as TRAIN_HELP, RECIPES, RESUMABLE as TRAIN_RESUMABLE, TrainConfig
    p = sub.add_parser("train", help="train a found architecture from scratch",
                       description=f"Train a genotype with a published recipe ({', '.join(RECIPES.names())}). "
                                   "Defaults shown are the cifar recipe's; --recipe changes them.")
    p.add_argument("genotype", nargs="?", help=TRAIN_HELP["genotype"])
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of options (overridden by flags)")
    p.add_argument("--resume", metavar="DIR", help="continue the training run in DIR from its last checkpoint "
                   f"(options that may change: {_flags(TRAIN_RESUMABLE)})")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    _add_config_options(p, TrainConfig, TRAIN_HELP, skip=("genotype",))

    p = sub.add_parser("eval", help="test accuracy, loss, parameters and multiply-accumulates of a trained model")
    p.add_argument("model", metavar="DIR", help="training run directory (or its model.pt)")
    p.add_argument("--data", default=None, help="dataset to test on (default: the one it was trained on)")
    p.add_argument("--data-root", default=None, help="where cifar10/cifar100 live")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default: 256)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N "
                                                    "(default: auto)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("export", help="export a trained model for deployment")
    p.add_argument("model", metavar="DIR", help="training run directory (or its model.pt)")
    p.add_argument("--format", required=True, choices=FORMATS, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write (atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even where it is a file of a run directory (its model, checkpoint, ...)")
    return parser


def main_process() -> bool:
    """False on the ranks other than 0 of a torchrun launch: they train but do not report."""
    return int(os.environ.get("RANK", "0")) == 0


def _flags(names) -> str:
    return ", ".join("--" + k.replace("_", "-") for k in sorted(set(names) - {"out"}))


def _resume_changes(cls: type, args: argparse.Namespace, checkpoint: str) -> dict:
    """The options given beside ``--resume`` (flags and a config file, and the run's ``config.yaml`` where it was
    edited); the resumed run takes those it may."""
    if args.overwrite:
        raise GradnasError("--resume continues a run and --overwrite replaces it: pass one of them")
    explicit = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    # The run's config.yaml, edited by hand, counts as options given with --resume (below the flags and --config).
    saved, ours = Path(args.resume) / "config.yaml", (Path(args.resume) / checkpoint).is_file()
    edited = {k: v for k, v in given_options(cls, None, saved).items() if k != "out"} if ours and saved.is_file() else {}
    changes = {**edited, **given_options(cls, explicit, args.config)}
    if Path(changes.pop("out", args.resume)) != Path(args.resume):
        raise GradnasError("--out and --resume name different directories; the run stays in its own")
    return changes


def cmd_search(args: argparse.Namespace) -> int:
    from .search.loop import CHECKPOINT, search

    if args.resume:
        config, changes = SearchConfig(out=args.resume), _resume_changes(SearchConfig, args, CHECKPOINT)
    else:
        config, changes = resolve_config({f.name: getattr(args, f.name) for f in dataclasses.fields(SearchConfig)},
                                         args.config), None
    if args.dry_run:
        return _dry_run(config)
    args.checkpoint = Path(config.out) / CHECKPOINT  # what Ctrl-C reports (see main)
    result = search(config, resume=bool(args.resume), overwrite=args.overwrite, changes=changes)
    if not main_process():
        return 0
    print(f"genotype: {genotype_text(result.genotype)}")
    print(f"saved: {result.paths['genotype']}")
    if "nb201" in result.paths:
        print(result.paths["nb201"].read_text().rstrip())
    return 0


def _dry_run(config) -> int:
    from functools import partial

    from .data import load_dataset
    from .profiling import check_fits, format_bytes
    from .runtime import resolve_device
    from .search.loop import Searcher, build_search_model

    data = load_dataset(config.data, config.data_root, image_size=config.image_size)
    side, device = data.image_size, resolve_device(config.device)
    weights, activations = check_fits(partial(build_search_model, config, data.num_classes, data.in_channels),
                                      (config.batch_size, data.in_channels, side, side), device, "the supernet")
    print(f"sized without allocating: {format_bytes(weights)} of weights, at most {format_bytes(activations)} of "
          "activations; it fits, so one step follows")
    report = Searcher(config, data, claim=False).dry_run()
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
    from .extras import require
    from .rundir import read_manifest

    genotype = parse_genotype(args.genotype)
    print(genotype_text(genotype))
    net = build_eval_network(genotype, args.dataset)
    print(f"evaluation network ({args.dataset}): {count_parameters(net):,} parameters (auxiliary head excluded)")
    source = Path(args.genotype)
    out = Path(args.out) if args.out else source if source.is_dir() else source.parent if source.is_file() else None
    if out is None:  # a name or text form has no directory of its own: draw only where asked
        print("diagrams: pass --out DIR to draw the cells")
        return 0
    if read_manifest(out) is not None and not (source.is_dir() and source.resolve() == out.resolve()):
        raise GradnasError(f"{out} is a run directory and its diagrams are its own genotype's; pass another --out")
    try:
        viz = require("gradnas.viz", "drawing cell diagrams")
    except GradnasError as err:  # the core install: the text and counts above are the answer
        print(f"diagrams: {err}")
        return 0
    for path in viz.draw_genotype(genotype, out):
        print(f"diagram: {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import plot_run

    for path in plot_run(args.run, args.out):
        print(f"plot: {path}")
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
    from .train.trainer import CHECKPOINT

    dataset = changes = None
    if args.resume:
        config, changes = TrainConfig(out=args.resume), _resume_changes(TrainConfig, args, CHECKPOINT)
    else:
        overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
        config, dataset = configure_training(overrides, args.config)
    args.checkpoint = Path(config.out) / CHECKPOINT  # what Ctrl-C reports (see main)
    result = train(config, dataset, resume=bool(args.resume), overwrite=args.overwrite, changes=changes)
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

    result = export_model(args.model, args.format, args.out, args.overwrite)
    meta = result.meta
    print(f"exported: {result.path} (input: N×{meta['in_channels']}×{meta['image_size']}×{meta['image_size']} "
          f"float, normalised with mean {meta['mean']} and std {meta['std']}; output: logits)")
    if result.max_abs_diff is not None:
        print(f"checked: largest difference from the PyTorch model on a random batch {result.max_abs_diff:.2e}")
    return 0


COMMANDS = {"search": cmd_search, "show": cmd_show, "plot": cmd_plot, "bench": cmd_bench, "train": cmd_train, "eval": cmd_eval,
            "export": cmd_export}


def _import_plugins(modules: list[str]) -> None:
    if modules and os.getcwd() not in sys.path:  # as `python -m` does, so a module beside the runs is found
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise GradnasError(f"cannot import plugin {name!r}: {first_line(err)}") from None
        except SyntaxError as err:
            raise GradnasError(f"plugin {name!r}: {err.msg} ({Path(err.filename or name).name}, line {err.lineno})") from None
        except Exception as err:  # the plugin's own code failed (e.g. it registers a name that exists): no traceback
            raise GradnasError(f"plugin {name!r} failed on import: {type(err).__name__}: {first_line(err)}") from None


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (PIL, matplotlib, torch) is for the one who reads the log of every epoch (-v): one
    line there, nothing otherwise; gradnas's own warnings go through its log."""
    logging.getLogger("gradnas").info("warning (%s): %s", category.__name__, first_line(Warning(message)))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed as one line
        return stop.code if isinstance(stop.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    warnings.showwarning = _warning_line
    try:
        _import_plugins(args.plugin)
        return COMMANDS[args.command](args)
    except GradnasError as err:
        print(f"gradnas: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if not (type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(err)):
            raise
        print(f"gradnas: error: out of memory ({first_line(err).split('. ')[-1]}): pass a smaller --batch-size, "
              "--channels, --layers or --image-size (gradnas search --dry-run sizes a search first)", file=sys.stderr)
        return 2
    except OSError as err:  # the file system refused a path (too long a name, a loop of links, ...)
        where = f"{err.filename}: " if err.filename else ""
        print(f"gradnas: error: {where}{err.strerror or first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        checkpoint = getattr(args, "checkpoint", None)
        if checkpoint is not None and checkpoint.is_file():
            hint = f"; resume with gradnas {args.command} --resume {checkpoint.parent}"
        elif checkpoint is not None:
            hint = " before the first checkpoint: nothing to resume; start again with --overwrite"
        else:
            hint = ""
        print(f"gradnas: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
