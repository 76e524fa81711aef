"""Run by the distributed tests under torchrun: a tiny search whose final state each rank saves."""
import json
import os
import sys

import torch

from gradnas.config import resolve_config
from gradnas.search.loop import Searcher

out, overrides = sys.argv[1], json.loads(sys.argv[2])
# a list of overrides: one search after the other in this launch, the i-th in out/i
runs = [(out, overrides)] if isinstance(overrides, dict) else [(os.path.join(out, str(i)), o)
                                                               for i, o in enumerate(overrides)]
for run_out, run_overrides in runs:
    config = resolve_config({"space": "nb201", "channels": 4, "layers": 1, "epochs": 2, "steps_per_epoch": 3,
                             "progress": False, "out": run_out, **run_overrides})
    result = Searcher(config).run()
    rank = int(os.environ.get("RANK", "0"))
    torch.save({"arch": [p.detach() for p in result.model.arch_parameters()],
                "weights": [p.detach() for p in result.model.weight_parameters()],
                "buffers": [b.detach() for b in result.model.buffers()], "genotype": result.genotype,
                "batched": all(cell.node_sum is not None for cell in result.model.net.cells)},
               os.path.join(run_out, f"rank{rank}.pt"))
