"""Architecture parameterisations (chosen by name) and the optional parts that compose with them."""
from ..options import Option, declare
from ..registry import Registry
from .attention import GroupAttention
from .base import Architecture, CellModifier, CellWeights
from .dirichlet import DirichletAlpha
from .dnas import DecoupledPsi, zero_one_loss
from .edge_norm import EdgeNormalization
from .gumbel import GumbelSoftmax, HardGumbel
from .masks import BinaryMasks
from .softmax import PerCellSoftmax, SampledAlpha, SoftmaxAlpha

ARCHITECTURES: Registry = Registry("architecture parameterisation")
ARCHITECTURES.register("softmax")(SoftmaxAlpha)
ARCHITECTURES.register("per-cell-softmax")(PerCellSoftmax)
ARCHITECTURES.register("dnas")(DecoupledPsi)
ARCHITECTURES.register("masks")(BinaryMasks)
ARCHITECTURES.register("gumbel")(GumbelSoftmax)
ARCHITECTURES.register("gumbel-hard")(HardGumbel)
ARCHITECTURES.register("dirichlet")(DirichletAlpha)

__all__ = ["ARCHITECTURES", "Architecture", "BinaryMasks", "CellModifier", "CellWeights", "DecoupledPsi",
           "DirichletAlpha", "EdgeNormalization", "GroupAttention", "GumbelSoftmax", "HardGumbel", "PerCellSoftmax",
           "SampledAlpha", "SoftmaxAlpha", "zero_one_loss"]


declare(
    "architecture",
    Option("arch", str, 'softmax', 'architecture parameterisation: {choices}', choices=ARCHITECTURES.names),
    Option("edge_norm", bool, False, "PC-DARTS edge normalisation: softmax of β over each node's incoming edges"),
)
