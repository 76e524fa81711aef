"""IS-DARTS's binary masks (docs/methods.md §5.2): no learned architecture, only which candidates are alive.

One mask m ∈ {0, 1}^{E×|O|} per cell type, all ones at the start; op weights are m / |O| with |O| the fixed
op count (not the number of survivors), as the authors' code does. The masks are buffers, so they travel
with the model's state dict; progressive shrinking clears entries through :meth:`set_alive`.
"""
from __future__ import annotations

import torch

from .base import Architecture, shared_by_type


class BinaryMasks(Architecture):
    def __init__(self, cell_types, op_names, in_degrees):
        super().__init__(cell_types, op_names, in_degrees)
        self.types = tuple(dict.fromkeys(cell_types))
        for t in self.types:
            self.register_buffer(f"mask_{t}", torch.ones(self.num_edges, len(op_names)))

    def mask(self, cell_type: str) -> torch.Tensor:
        return getattr(self, f"mask_{cell_type}")

    @torch.no_grad()
    def set_alive(self, cell_type: str, alive: torch.Tensor) -> None:
        """Write the (E, |O|) boolean ``alive`` matrix into the mask of ``cell_type``."""
        self.mask(cell_type).copy_(alive)

    def op_weights(self) -> list[torch.Tensor]:
        n_ops = len(self.op_names)
        return shared_by_type(self.cell_types, {t: self.mask(t) / n_ops for t in self.types})
