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
    # the method's parts (METHODS.md; each a registry name or an option of one)
    arch: str = "softmax"                # architecture parameterisation
    edge: str = "mixed"                  # mixed-edge kind
    partial_k: int = 1                   # PC-DARTS: 1/K of the channels through the ops
    partial_sampling: str = "first"      # PC-DARTS: "first" C/K channels (code) or a "random" subset (paper)
    edge_norm: bool = False              # PC-DARTS edge normalisation
    selection: str | None = None         # None: the space's rule
    arch_update: str = "bilevel"
    hooks: list[str] = field(default_factory=list)  # per-epoch method hooks (e.g. progressive shrinking)
    order: int = 1
    # weight optimisation
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
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
    cutout: int = 0
    # run
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    channels_last: bool = True
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
    values = {**SPACE_DEFAULTS[space], **PRESETS[method](space), **given}
    config = SearchConfig(**values)
    _check(config)
    return config


def _check(config: SearchConfig) -> None:
    positive = ("epochs", "batch_size", "channels", "partial_k")
    for name in positive:
        if getattr(config, name) < 1:
            raise GradnasError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.layers is not None and config.layers < 1:
        raise GradnasError(f"layers must be at least 1, got {config.layers}")
    if config.order not in (1, 2):
        raise GradnasError(f"order must be 1 or 2, got {config.order}")
    if not 0.0 < config.train_portion < 1.0:
        raise GradnasError(f"train_portion must lie in (0, 1), got {config.train_portion}")
    if config.channels % config.partial_k:
        raise GradnasError(f"channels ({config.channels}) must be divisible by partial_k ({config.partial_k})")
