"""Optional dependencies: each belongs to an extra of the package, named when it is missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import GradnasError

#: top-level module → the extra that installs it (pip install "gradnas[EXTRA]")
EXTRAS = {"matplotlib": "plot", "graphviz": "graphviz", "tensorboard": "tensorboard", "PIL": "images",
          "onnx": "onnx", "onnxscript": "onnx", "nats_bench": "nats"}


def missing_extra(err: ImportError, purpose: str) -> GradnasError:
    """The one-line error for ``err``, an optional module that failed to import while doing ``purpose``."""
    module = (err.name or "").split(".")[0]
    if module not in EXTRAS:
        raise err  # not an optional dependency: a real bug, keep its traceback
    return GradnasError(f"{purpose} needs {module}: pip install 'gradnas[{EXTRAS[module]}]'")


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (an optional dependency, or a gradnas module that needs one)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_extra(err, purpose) from None
