"""Search options, declared by the part that reads them.

Every part of a search (the data and the loop, the supernet, the edge, the architecture parameterisation, the
update, the hooks, the selection) declares its options once, with :func:`declare`: name, type, default, help
text and, for an option that names a registry entry, the registry its choices come from. ``SearchConfig``
is assembled from these declarations, ``gradnas search --help`` shows one group per part with each flag's help,
default and choices, and a config file may group its options under the parts' names::

    method: pc-darts
    edge: {partial_k: 8}
    update: {arch_lr: 6e-4}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable



@dataclass(frozen=True)
class Option:
    name: str
    kind: Any                  # the annotation: int, float, str, bool, list[str], int | None, ...
    default: Any
    help: str                  # "{choices}" is replaced by the registered names, when ``choices`` is set
    choices: Callable[[], list[str]] | None = None  # the registry names it takes (read when the help is shown)

    def field(self) -> tuple[str, Any, dataclasses.Field]:
        factory = (lambda v=self.default: list(v)) if isinstance(self.default, list) else None
        value = dataclasses.field(default_factory=factory) if factory else dataclasses.field(default=self.default)
        return self.name, self.kind, value


#: Part name → its options (the help's groups, in this order; a part declared later comes last).
PARTS: dict[str, tuple[Option, ...]] = dict.fromkeys(
    ("data", "supernet", "method", "edge", "architecture", "update", "hooks", "shrinking", "selection",
     "optimisation", "run"), ())


def declare(part: str, *options: Option) -> tuple[Option, ...]:
    """Add ``options`` to ``part`` (a part may declare in several modules, e.g. the architecture's parts)."""
    taken = {o.name for opts in PARTS.values() for o in opts}
    twice = [o.name for o in options if o.name in taken]
    if twice:
        raise ValueError(f"option(s) declared twice: {', '.join(twice)}")
    PARTS[part] = PARTS.get(part, ()) + options
    return options


def ungroup(values: dict[str, Any], source: str) -> dict[str, Any]:
    """A config file's options with every part's group (``edge: {partial_k: 4}``) flattened; no option takes a
    mapping, so a mapping under a part's name is always a group. One line for a group of an unknown part or
    an option filed under the wrong part."""
    from .errors import GradnasError

    flat: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(value, dict):
            flat[key] = value
            continue
        if key not in PARTS:
            raise GradnasError(f"{source}: {key} is not a part with options; parts: {', '.join(PARTS)}")
        members = {o.name for o in PARTS[key]}
        for name, inner in value.items():
            name = str(name).replace("-", "_")
            if name not in members:
                raise GradnasError(f"{source}: {name} is not an option of {key} (its options: {', '.join(members)})")
            flat[name] = inner
    return flat
