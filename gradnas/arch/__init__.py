"""Architecture parameterisations (chosen by name) and the optional parts that compose with them."""
from ..registry import Registry
from .base import Architecture, CellModifier, CellWeights
from .edge_norm import EdgeNormalization
from .softmax import SoftmaxAlpha

ARCHITECTURES: Registry = Registry("architecture parameterisation")
ARCHITECTURES.register("softmax")(SoftmaxAlpha)

__all__ = ["ARCHITECTURES", "Architecture", "CellModifier", "CellWeights", "EdgeNormalization", "SoftmaxAlpha"]
