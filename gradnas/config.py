"""Typed configuration of a search, its defaults per space and method, and YAML/TOML config files.

Precedence, lowest first: the dataclass defaults (DARTS on the DARTS space, docs/methods.md §2), the search
space's defaults, the method preset, a config file, explicit arguments.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from . import arch, edges, selection, spaces  # noqa: F401  (each part declares its options on import)
from .data import check_cutout
from .errors import GradnasError
from .limits import MAX_INT, check_parsed, check_sizes, parse_error, read_text
from .options import PARTS, Option, declare, ungroup
from .search import bilevel, hooks, shrinking  # noqa: F401

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _method_names() -> list[str]:
    from .methods import PRESETS  # the presets import the configuration's parts in turn
    return PRESETS.names()


# The options of the search itself: its data, method, weight optimisation and run. The other parts declare
# theirs where they are defined (gradnas.options).
declare(
    "data",
    Option("data", str, 'digits',
           'dataset: digits (built in), cifar10, cifar100, a .npz file or an image-folder directory'),
    Option("data_root", str | None, None,
           'where cifar10/cifar100 live or are downloaded to (else $GRADNAS_DATA, ~/.cache/gradnas/data)'),
    Option("image_size", int | None, None,
           'resize images to this square side (default: as they are; image folders of mixed sizes: 64)'),
    Option("train_portion", float, 0.5,
           'share of the training set the weights train on; the rest is the validation part for α'),
    Option("train_subset", float | None, None,
           "fraction of the training set drawn (seeded) as the search's train part; with --val-subset"),
    Option("val_subset", float | None, None,
           'fraction drawn, disjoint from --train-subset, as the validation part (PC-DARTS ImageNet)'),
    Option("cutout", float, 0.0,
           'cutout side as a fraction of the image side during search (0.5: 16 px on 32-px CIFAR; 0: off)'),
)
declare(
    "method",
    Option("method", str, 'darts',
           'method preset, setting the published defaults below: {choices}', choices=_method_names),
)
declare(
    "optimisation",
    Option("epochs", int, 50, 'search epochs'),
    Option("batch_size", int, 64, 'batch size (per rank under torchrun)'),
    Option("lr", float, 0.025, 'weight learning rate (SGD), cosine-annealed to --lr-min'),
    Option("lr_min", float, 0.001, 'final weight learning rate'),
    Option("lr_per_step", bool, False, 'anneal the cosine every iteration rather than every epoch'),
    Option("lr_warmup_epochs", int, 0, 'epochs of linear weight-lr warm-up before the cosine (PC-DARTS ImageNet 5)'),
    Option("momentum", float, 0.9, 'SGD momentum'),
    Option("nesterov", bool, False, 'Nesterov momentum'),
    Option("weight_decay", float, 0.0003, 'weight decay of the weights'),
    Option("grad_clip", float, 5.0, 'gradient-norm clip of the weights (0: off)'),
)
CUDA_GRAPH_MODES = ("auto", "on", "off")
declare(
    "run",
    Option("out", str, 'runs/search', 'run directory'),
    Option("seed", int, 0, 'random seed'),
    Option("device", str, 'auto', 'auto (CUDA when present, else CPU), cpu, cuda or cuda:N'),
    Option("deterministic", bool, False, 'deterministic kernels (slower)'),
    Option("channels_last", bool, True, 'channels-last memory layout'),
    Option("amp", bool, False, 'mixed precision on GPUs: bfloat16 where supported, else float16 with loss scaling'),
    Option("compile", bool, False, "torch.compile each cell structure once (cells of one shape share a graph)"),
    Option("cuda_graph", str, "auto", "capture each search iteration as a CUDA graph and replay it: {choices} "
           "(auto: on a CUDA device, where the run allows it)", choices=lambda: list(CUDA_GRAPH_MODES)),
    Option("sync_bn", bool, False, 'under torchrun, batch-norm statistics over all ranks'),
    Option("steps_per_epoch", int | None, None,
           'cap on iterations per epoch (quick looks, tests; default: a whole pass)'),
    Option("log_every", int, 20, 'non-finite-loss check and progress-bar update every N iterations'),
    Option("nb201_table", str | None, None,
           'NAS-Bench-201 accuracy table (.csv or .npz; else $GRADNAS_NB201_TABLE, else the packaged one)'),
    Option("top_k", int, 5, 'nb201: report the k most probable architectures under the final α'),
    Option("progress", bool, True, 'progress bar'),
)


def _to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


#: Every declared option as a field (defaults: DARTS on the DARTS space), grouped by the part that reads it.
SearchConfig = dataclasses.make_dataclass(
    "SearchConfig", [o.field() for options in PARTS.values() for o in options],
    namespace={"to_dict": _to_dict, "__doc__": "A search's options: every part's declarations (gradnas.options).",
               "__module__": __name__})


FIELD_NAMES = {f.name for f in fields(SearchConfig)}
#: What a resumed search may change: rates, clipping, length, logging, device, look-up (see :func:`resumed_config`).
RESUMABLE = frozenset({"out", "lr", "lr_min", "arch_lr", "grad_clip", "epochs", "log_every", "progress", "device",
                       "data_root", "nb201_table", "top_k", "executor", "cuda_graph"})

class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (plain PyYAML keeps the last value; TOML and
    gradnas's JSON reading refuse it)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is repeated (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = next((k for k in keys if keys.count(k) > 1), None)
    if repeated is not None:
        raise ValueError(f"the key {repeated!r} is repeated")
    return dict(pairs)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GradnasError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise GradnasError(f"config file {path}: use a .yaml, .yml, .toml or .json file")
    text, what = read_text(path, "config file"), f"config file {path}"
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_unique_pairs)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as err:
        raise GradnasError(f"{what} is malformed: {str(err).splitlines()[0]}") from None
    except (RecursionError, MemoryError) as err:
        raise parse_error(err, what) from None
    if not isinstance(check_parsed(data, what), dict):
        raise GradnasError(f"config file {path} must hold a mapping of option names to values")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def check_types(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` checked against the field types of the dataclass ``cls`` (bools, ints, floats, strings, lists,
    optional fields), one line naming the first wrong key; ints are taken as floats."""
    hints = typing.get_type_hints(cls)
    return {key: _typed(value, hints[key], key, source) for key, value in values.items()}


def _typed(value: Any, kind: Any, key: str, source: str) -> Any:
    if isinstance(kind, types.UnionType):  # X | None
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is list:
        if not isinstance(value, (list, tuple)):
            raise GradnasError(f"{source}: {key} must be a list, got {value!r}")
        return [_typed(v, typing.get_args(kind)[0], key, source) for v in value]
    if kind not in _KINDS:  # a type these files cannot spell: left to the option's own check
        return value
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise GradnasError(f"{source}: {key} must be {_KINDS[kind]}, got {value!r}"[:300])
    if kind is int and abs(value) > MAX_INT:
        raise GradnasError(f"{source}: {key} must fit in 64 bits, got {str(value)[:20]}...")
    return value


def resumed_config(cls: type, saved: dict[str, Any], changes: dict[str, Any], resumable: frozenset[str],
                   source: str) -> Any:
    """The configuration a resumed run continues with: the ``saved`` one with ``changes`` applied, where only the
    ``resumable`` options may differ; anything else that differs is refused with one line."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise GradnasError(f"{source} holds option(s) this gradnas version does not know: {', '.join(unknown)}")
    saved = check_types(cls, saved, source)
    unknown = sorted(set(changes) - names)
    if unknown:
        raise GradnasError(f"unknown option(s): {', '.join(unknown)}")
    changes = check_types(cls, changes, "resume")
    defaults = cls()
    fixed = sorted(k for k, v in changes.items() if k not in resumable and v != saved.get(k, getattr(defaults, k)))
    if fixed:
        flag = lambda k: "--" + k.replace("_", "-")
        raise GradnasError(f"a resumed run keeps its configuration: {', '.join(map(flag, fixed))} cannot change "
                           f"(these can: {', '.join(flag(k) for k in sorted(resumable - {'out'}))})")
    return cls(**{**saved, **changes})


def given_options(cls: type, overrides: dict[str, Any] | None, config_file: str | Path | None) -> dict[str, Any]:
    """The options of a config file, then the explicit ones (None: not given); names and types checked."""
    names = {f.name for f in fields(cls)}
    source = f"config file {config_file}"
    from_file = read_config_file(config_file) if config_file else {}
    if cls is SearchConfig:  # a search's config file may group its options by part
        from_file = ungroup(from_file, source)
    parts = [(from_file, source), ({k: v for k, v in (overrides or {}).items() if v is not None}, "options")]
    given: dict[str, Any] = {}
    for values, source in parts:
        unknown = sorted(set(values) - names)
        if unknown:
            raise GradnasError(f"{source}: unknown option(s): {', '.join(unknown)}")
        given.update(check_types(cls, values, source))
    return given


def resolve_config(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> SearchConfig:
    """Build the effective configuration from the layers of defaults, a file and explicit values."""
    from .methods import PRESETS  # the methods import torch: only when a configuration is resolved
    given = given_options(SearchConfig, overrides, config_file)
    space = given.get("space", SearchConfig.space)
    method = given.get("method", SearchConfig.method)
    from .spaces import SPACES  # the spaces import torch: only when a configuration is resolved

    space_defaults = SPACES[space].defaults  # an unknown space: one line naming the known ones
    preset = PRESETS[method](space)
    # A preset may hold per-dataset values (e.g. DNAS's batch size on CIFAR-100) under "by_data".
    data_name = str(given.get("data", SearchConfig.data)).lower().replace("-", "")
    by_data = preset.pop("by_data", {}).get(data_name, {})
    values = {**space_defaults, **preset, **by_data, **given}
    config = SearchConfig(**values)
    check_config(config)
    return config


def check_config(config: SearchConfig) -> None:
    """Every value in its range, before any work starts (one line naming the option)."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise GradnasError(f"{f.name} must be a finite number, got {value}")
    at_least_1 = ("epochs", "batch_size", "channels", "partial_k", "groups", "conv_groups", "log_every", "top_k",
                  "layers", "steps_per_epoch")
    for name in at_least_1:
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise GradnasError(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in ("lr", "grad_clip", "shrink_rate"):
        if getattr(config, name) <= 0:
            raise GradnasError(f"{name} must be positive, got {getattr(config, name)}")
    for name in ("lr_min", "arch_lr", "momentum", "weight_decay", "arch_weight_decay", "arch_warmup_epochs",
                 "cutout", "attention_spread", "iim_samples", "iim_every", "shrink_interval", "seed"):
        if (getattr(config, name) or 0) < 0:
            raise GradnasError(f"{name} must not be negative, got {getattr(config, name)}")
    if config.shrink_rate > 1:
        raise GradnasError(f"shrink_rate must lie in (0, 1], got {config.shrink_rate}")
    if config.seed >= 2 ** 32:
        raise GradnasError(f"seed must be below 2**32 (NumPy's limit), got {config.seed}")
    if config.nesterov and config.momentum == 0:
        raise GradnasError("nesterov needs a positive momentum")
    if len(config.arch_betas) != 2 or not all(0 <= b < 1 for b in config.arch_betas):
        raise GradnasError(f"arch_betas must be two numbers in [0, 1), got {config.arch_betas}")
    if config.order == 2 and config.arch_update != "bilevel":
        raise GradnasError(f"order 2 applies to the bilevel architecture update; method {config.method!r} "
                           f"uses {config.arch_update!r}")
    if config.ops is not None:
        _check_ops(config)
    _check_cell(config)
    check_sizes(config.layers, config.steps, config.image_size)
    if config.order not in (1, 2):
        raise GradnasError(f"order must be 1 or 2, got {config.order}")
    if config.cuda_graph not in CUDA_GRAPH_MODES:
        raise GradnasError(f"cuda_graph must be {', '.join(CUDA_GRAPH_MODES)}, got {config.cuda_graph!r}")
    if config.executor not in ("per-edge", "batched"):
        raise GradnasError(f"executor must be per-edge or batched, got {config.executor!r}")
    if not 0.0 < config.train_portion < 1.0:
        raise GradnasError(f"train_portion must lie in (0, 1), got {config.train_portion}")
    if (config.train_subset is None) != (config.val_subset is None):
        raise GradnasError("train_subset and val_subset go together: set both or neither")
    if config.train_subset is not None and not (0 < config.train_subset < 1 and 0 < config.val_subset
                                                and config.train_subset + config.val_subset <= 1 + 1e-9):
        raise GradnasError(f"train_subset and val_subset must be positive fractions summing to at most 1, "
                           f"got {config.train_subset} and {config.val_subset}")
    check_cutout(config.cutout)
    if not 0.0 <= config.skip_dropout < 1.0:
        raise GradnasError(f"skip_dropout must lie in [0, 1), got {config.skip_dropout}")
    if not 0 <= config.lr_warmup_epochs < config.epochs:
        raise GradnasError(f"lr_warmup_epochs must lie in 0..epochs-1, got {config.lr_warmup_epochs}")
    if config.arch_grad_clip < 0:
        raise GradnasError(f"arch_grad_clip must not be negative, got {config.arch_grad_clip}")
    if config.zero_one_weight < 0:
        raise GradnasError(f"zero_one_weight must be non-negative, got {config.zero_one_weight}")
    if config.channels % config.partial_k:
        raise GradnasError(f"channels ({config.channels}) must be divisible by partial_k ({config.partial_k})")
    _check_groups(config)


def _check_ops(config: SearchConfig) -> None:
    from .spaces import SPACES
    from .spaces.ops import check_op_shape

    known = SPACES[config.space].ops.names()
    unknown = [op for op in config.ops if op not in known]
    if unknown:
        raise GradnasError(f"unknown {config.space} op(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if len(set(config.ops)) != len(config.ops):
        raise GradnasError(f"ops lists an op twice: {' '.join(config.ops)}")
    if not set(config.ops) - {"none"}:
        raise GradnasError("ops needs at least one op besides none: a cell of none alone computes nothing")
    space = SPACES[config.space]
    for op in sorted(set(config.ops) - set(space.default_ops)):  # a user's op: its output must fit the edge's sum
        check_op_shape(config.space, op, (1, 2) if space.reduction_cell else (1,))


def _check_cell(config: SearchConfig) -> None:
    from .spaces import SPACES

    fixed = [name for name in ("steps", "multiplier") if getattr(config, name) is not None
             and name not in SPACES[config.space].options]
    if fixed:
        raise GradnasError(f"{' and '.join(fixed)} shape the cells of spaces that take them (darts); the "
                           f"{config.space} cell is fixed")
    steps = 4 if config.steps is None else config.steps
    if steps < 1 or config.multiplier is not None and not 1 <= config.multiplier <= steps:
        raise GradnasError(f"steps must be at least 1 and multiplier in 1..steps, got steps {config.steps}, "
                           f"multiplier {config.multiplier}")


def _check_groups(config: SearchConfig) -> None:
    """Channel groups and grouped convs must divide the widths they split (at the first stage; later ones double)."""
    if config.partial_sampling not in ("first", "random", "all"):
        raise GradnasError(f"partial_sampling must be first, random or all, got {config.partial_sampling!r}")
    if config.group_mode not in ("exact", "split"):
        raise GradnasError(f"group_mode must be exact or split, got {config.group_mode!r}")
    width = config.channels if config.partial_sampling == "all" else config.channels // config.partial_k
    if width % config.groups:
        raise GradnasError(f"the {width} channels reaching the ops must be divisible by groups ({config.groups})")
    op_width = width // config.groups if config.group_mode == "exact" else width
    # A stride-2 skip (DARTS space) splits its output in two halves, each grouped.
    from .spaces import SPACES

    need = config.conv_groups * (SPACES[config.space].conv_group_split if config.conv_groups > 1 else 1)
    if op_width % need:
        raise GradnasError(f"the ops' width ({op_width} channels) must be divisible by {need} for conv_groups "
                           f"{config.conv_groups}")
