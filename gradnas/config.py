"""Typed configuration of a search, its defaults per space and method, and YAML/TOML config files.

Precedence, lowest first: the dataclass defaults (DARTS on the DARTS space, METHODS.md §2), the search
space's defaults, the method preset, a config file, explicit arguments.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from .data import check_cutout
from .errors import GradnasError
from .registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class SearchConfig:
    # what to search, on what
    space: str = "darts"
    method: str = "darts"
    data: str = "digits"
    data_root: str | None = None
    out: str = "runs/search"
    # supernet
    channels: int = 16
    layers: int | None = None            # None: 8 cells (DARTS space), 5 per stage (NB201)
    ops: list[str] | None = None         # None: the space's full op set
    bn_running_stats: bool = True        # False: every supernet BN normalises with batch statistics (IS-DARTS)
    # the method's parts (METHODS.md; each a registry name or an option of one)
    arch: str = "softmax"                # architecture parameterisation
    edge: str = "mixed"                  # mixed-edge kind
    partial_k: int = 1                   # PC-DARTS: 1/K of the channels through the ops
    partial_sampling: str = "first"      # PC-DARTS: "first" C/K channels (code), a "random" subset (paper), or
                                         # "all" channels (G-PC-DARTS-A: K groups through the ops, then the shuffle)
    edge_norm: bool = False              # PC-DARTS edge normalisation
    skip_dropout: float = 0.0            # DNAS: dropout on the skip_connect branch during search
    zero_one_weight: float = 0.0         # DNAS: weight of the zero-one loss on σ(α), σ(γ) (0: off)
    beta_softmax: str = "layer"          # DNAS: softmax of β over a cell's edges ("layer") or per "node"
    groups: int = 1                      # G-DARTS-A: channel groups M of every edge
    group_mode: str = "exact"            # G-DARTS-A: "exact" (groups through one shared op) or "split" (full-width op)
    conv_groups: int = 1                 # G-DARTS-A: groups g of the convs inside the candidate ops
    group_attention: bool = False        # G-DARTS-A: learnable scale a[cell, edge, group]
    attention_spread: float = 0.3        # G-DARTS-A: initial attention evenly spaced in 1 ± spread
    attention_sigmoid: bool = False      # G-DARTS-A: SE-style sigmoid on the attention
    selection: str | None = None         # None: the space's rule
    arch_update: str = "bilevel"
    hooks: list[str] = field(default_factory=list)  # per-epoch method hooks (e.g. progressive shrinking)
    importance: str = "fisher"           # shrinking: rank by "fisher" information of op outputs, or "alpha"
    shrink_rate: float = 0.25            # shrinking: r, S = round(1/r) steps
    shrink_interval: int = 2             # shrinking: I epochs between steps; the last step is I epochs before the end
    iim_samples: int | None = 200        # images per importance measurement; 0 or None: the whole training loader
    iim_every: int = 1                   # also measure importance every k epochs, for the plot (0: at steps only)
    order: int = 1
    # weight optimisation
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    lr_per_step: bool = False            # cosine schedule updated every iteration (IS-DARTS), not every epoch
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # architecture optimisation
    arch_lr: float = 3e-4
    arch_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    arch_warmup_epochs: int = 0
    # data handling
    train_portion: float = 0.5
    train_subset: float | None = None    # fractions of the training set drawn (seeded, disjoint) as the search's
    val_subset: float | None = None      # train / val parts instead of the train_portion split (PC-DARTS ImageNet)
    cutout: float = 0.0                  # side of the cutout square as a fraction of the image side (0: off)
    # run
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    channels_last: bool = True
    amp: bool = False                    # mixed precision: bf16 autocast where supported, else fp16 + scaling
    compile: bool = False                # torch.compile the supernet (architecture weights stay tensor inputs)
    sync_bn: bool = False                # data-parallel runs: batch statistics over all ranks
    steps_per_epoch: int | None = None   # cap on iterations per epoch (quick looks, tests)
    log_every: int = 20
    nb201_table: str | None = None
    top_k: int = 5
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = {f.name for f in fields(SearchConfig)}

SPACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "darts": {"layers": 8},
    # DARTS on NB201 as in the benchmark's own code (METHODS.md §1.2)
    "nb201": {"layers": 5, "nesterov": True, "weight_decay": 5e-4},
}

#: A method preset is data: the published choices and hyper-parameters, possibly per space.
PRESETS: Registry[Callable[[str], dict[str, Any]]] = Registry("method")
PRESETS.register("darts")(lambda space: {})


def _load_presets() -> None:
    from . import methods  # noqa: F401  (registers every method's preset)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GradnasError(f"config file {path} does not exist")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or {}
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise GradnasError(f"config file {path}: use a .yaml, .yml, .toml or .json file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise GradnasError(f"config file {path} is malformed: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise GradnasError(f"config file {path} must hold a mapping of option names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def resolve_config(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> SearchConfig:
    """Build the effective configuration from the layers of defaults, a file and explicit values."""
    _load_presets()
    given = read_config_file(config_file) if config_file else {}
    given.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(given) - FIELD_NAMES)
    if unknown:
        raise GradnasError(f"unknown option(s): {', '.join(unknown)}")
    space = given.get("space", SearchConfig.space)
    method = given.get("method", SearchConfig.method)
    if space not in SPACE_DEFAULTS:
        raise GradnasError(f"unknown search space {space!r}; choose from {', '.join(SPACE_DEFAULTS)}")
    preset = PRESETS[method](space)
    # A preset may hold per-dataset values (e.g. DNAS's batch size on CIFAR-100) under "by_data".
    data_name = str(given.get("data", SearchConfig.data)).lower().replace("-", "")
    by_data = preset.pop("by_data", {}).get(data_name, {})
    values = {**SPACE_DEFAULTS[space], **preset, **by_data, **given}
    config = SearchConfig(**values)
    _check(config)
    return config


def _check(config: SearchConfig) -> None:
    positive = ("epochs", "batch_size", "channels", "partial_k", "groups", "conv_groups")
    for name in positive:
        if getattr(config, name) < 1:
            raise GradnasError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.layers is not None and config.layers < 1:
        raise GradnasError(f"layers must be at least 1, got {config.layers}")
    if config.order not in (1, 2):
        raise GradnasError(f"order must be 1 or 2, got {config.order}")
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
    if config.zero_one_weight < 0:
        raise GradnasError(f"zero_one_weight must be non-negative, got {config.zero_one_weight}")
    if config.channels % config.partial_k:
        raise GradnasError(f"channels ({config.channels}) must be divisible by partial_k ({config.partial_k})")
    _check_groups(config)


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
    need = config.conv_groups * (2 if config.space == "darts" and config.conv_groups > 1 else 1)
    if op_width % need:
        raise GradnasError(f"the ops' width ({op_width} channels) must be divisible by {need} for conv_groups "
                           f"{config.conv_groups}")
