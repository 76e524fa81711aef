"""Method presets, registered here beside the methods they configure (``PRESETS``).

A preset is data: a function of the search space returning the options it sets (the published choices and
hyper-parameters, possibly per space). Importing this package registers them all.
"""
from typing import Any, Callable

from ..registry import Registry

PRESETS: Registry[Callable[[str], dict[str, Any]]] = Registry("method")
PRESETS.register("darts")(lambda space: {})  # DARTS: the options' defaults

from . import betadarts, dnas, drnas, gdarts, gumbel, isdarts, pcdarts  # noqa: E402,F401  (each registers its presets)
