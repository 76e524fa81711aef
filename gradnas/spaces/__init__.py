"""Search spaces, each described by one registered :class:`SearchSpace` (``SPACES``): DARTS and NAS-Bench-201."""
from .darts import DARTS, DartsSupernet
from .nb201 import NB201, NB201Supernet
from .ops import DARTS_OPS, NB201_OPS, OPS, build_op
from .space import SPACES, CellFormat, SearchSpace, ShrinkSubsets, register_space

__all__ = ["SPACES", "DARTS", "NB201", "CellFormat", "SearchSpace", "ShrinkSubsets", "register_space", "DARTS_OPS",
           "NB201_OPS", "OPS", "build_op", "DartsSupernet", "NB201Supernet"]
