"""Search spaces: supernets chosen by name. Each has ``space``, ``op_names``, ``cell_types`` and ``in_degrees``."""
from ..registry import Registry
from .darts import DartsSupernet
from .nb201 import NB201Supernet
from .ops import DARTS_OPS, NB201_OPS, OPS, build_op

SPACES: Registry = Registry("search space")
SPACES.register("darts")(DartsSupernet)
SPACES.register("nb201")(NB201Supernet)

DEFAULT_OPS = {"darts": DARTS_OPS, "nb201": NB201_OPS}

__all__ = ["SPACES", "DEFAULT_OPS", "DARTS_OPS", "NB201_OPS", "OPS", "build_op", "DartsSupernet", "NB201Supernet"]
