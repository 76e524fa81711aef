"""Every captured configuration on a real GPU: does it replay, and does it end where the eager run ends?

Each check runs a short search or training twice from the same seed under ``--cuda-graph on``, once with the
capture held off (every call eager, the same capturable optimisers) and once captured, and reports the graphs
captured, the replays counted (every call after a graph's warm-ups must replay: a batch that misses the
graph's shapes would run eagerly unseen) and the largest difference between the two runs' final weights,
buffers and architecture parameters, against a float tolerance (bf16 rounds more). ``forced-failure`` makes the
step read a value back and expects the one-line error that advises ``--cuda-graph off``. One JSON record per
check; the exit status is 1 when a check fails.

    python bench/gpu_check.py                       # on a GPU: every check, about a minute
    python bench/gpu_check.py --checks dnas streamed
    python bench/gpu_check.py --cpu                 # smoke mode: the same checks through the CPU stand-in
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import tempfile
import time
from functools import partial
from typing import Any
from unittest import mock

import torch
from torch.utils.data import DataLoader, Dataset

import gradnas.capture
import gradnas.search.loop as loop
import gradnas.train.trainer as trainer
from gradnas.capture import CapturedStep
from gradnas.config import resolve_config
from gradnas.data import stream_data
from gradnas.errors import GradnasError
from gradnas.train import Trainer, resolve_train_config

NB201 = {"space": "nb201", "channels": 8, "layers": 2}
DARTS = {"space": "darts", "channels": 8, "layers": 3}
#: name: (search or train, options, graphs the captured run must capture). Point 7 of the capture review:
#: second order, bf16, both executors, DNAS's draws, IS-DARTS's per-step rate and removals, PC-DARTS's warm-up
#: switch, β-DARTS's λ, streamed data, the trainer (drop path, fp32 and bf16).
CHECKS: dict[str, tuple[str, dict[str, Any], int]] = {
    "darts-2nd-order": ("search", {**DARTS, "order": 2}, 1),
    "darts-bf16": ("search", {**DARTS, "amp": True}, 1),
    "per-edge": ("search", {**DARTS, "executor": "per-edge"}, 1),
    "batched": ("search", {**DARTS, "executor": "batched"}, 1),
    "dnas": ("search", {**DARTS, "method": "dnas"}, 1),
    "is-darts": ("search", {**NB201, "method": "is-darts", "epochs": 5, "shrink_rate": 0.25, "shrink_interval": 1,
                            "iim_samples": 16, "lr_per_step": True}, 5),  # ops removed after epochs 0 to 3
    "pc-darts-warm-up": ("search", {**DARTS, "method": "pc-darts", "batch_size": 32, "arch_warmup_epochs": 1}, 2),
    "beta-darts": ("search", {**NB201, "method": "beta-darts"}, 1),
    "streamed": ("search", {**NB201, "streamed": True}, 1),
    "training": ("train", {"drop_path": 0.2}, 1),
    "training-bf16": ("train", {"drop_path": 0.2, "amp": True}, 1),
    "forced-failure": ("search", {**NB201, "read_back": True}, 0),  # last: a failed capture leaves CUDA undefined
}
WARMUP = 3  # CapturedStep's eager calls before each capture


class Images(Dataset):
    """Float CIFAR-shaped images for the streamed check, read through DataLoader workers."""
    classes = list(range(10))

    def __init__(self, n: int, size: int):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


@contextlib.contextmanager
def cpu_stand_in():
    """The CPU smoke mode: capture as on a GPU (CapturableSGD, capturable Adam) through gradnas.capture.Tape."""
    adam = importlib.import_module("torch.optim.adam")
    capture = lambda setting, device, unsafe: setting == "on"
    with mock.patch.object(gradnas.capture, "CudaGraphs", gradnas.capture.Tape), \
            mock.patch.object(loop, "capture_mode", capture), mock.patch.object(trainer, "capture_mode", capture), \
            mock.patch.object(adam, "_get_capturable_supported_devices", lambda *a: ["cpu", "cuda"]), \
            mock.patch("gradnas.viz.draw_genotype", lambda *a: {}):
        yield


def run(kind: str, options: dict[str, Any], captured: bool, device: str, small: bool, out: str):
    """One short run; returns its final state and its CapturedStep."""
    with contextlib.ExitStack() as stack:
        if not captured:  # the same run with every call eager
            for module in (loop, trainer):
                stack.enter_context(mock.patch.object(module, "CapturedStep", partial(CapturedStep, warmup=math.inf)))
        return _run(kind, dict(options), device, small, out)


def _run(kind: str, options: dict[str, Any], device: str, small: bool, out: str):
    streamed, read_back = options.pop("streamed", False), options.pop("read_back", False)
    steps, batch = (5, 8) if small else (8, options.get("batch_size", 32))
    common = {"device": device, "cuda_graph": "on", "progress": False, "seed": 0, "steps_per_epoch": steps,
              "epochs": 2, "out": out, **options, "batch_size": batch}
    if small and "channels" in options:
        common["channels"] = 4
    torch.manual_seed(0)
    if kind == "train":
        config = resolve_train_config({"genotype": "darts_v2", "data": "digits", "auxiliary": False, "channels": 4,
                                       "layers": 3, "eval_every": 100, **common})
        owner = Trainer(config)
        owner.run()
        return owner.model.state_dict(), owner.captured
    data = None
    if streamed:
        images = Images(batch * steps * 2, 16 if small else 32)
        data = stream_data(DataLoader(images, batch_size=batch, num_workers=1 if small else 2, pin_memory=not small))
    owner = loop.Searcher(resolve_config(common), data)
    if read_back:  # a step that reads its loss on the host: the capture must fail, in one line
        iteration = owner.iteration
        owner.iteration = lambda *args: (lambda out: (out[0].item(), out)[1])(iteration(*args))
    owner.run()
    return owner.model.state_dict(), owner.captured


def check(name: str, device: str, small: bool) -> dict[str, Any]:
    kind, options, graphs = CHECKS[name]
    record: dict[str, Any] = {"check": name, "device": device if device == "cpu" else torch.cuda.get_device_name()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        if options.get("read_back"):
            try:
                run(kind, options, True, device, small, f"{out}/failing")
                record.update(ok=False, error=None)
            except GradnasError as err:
                record.update(ok="rerun with --cuda-graph off" in str(err) and "\n" not in str(err), error=str(err))
            record["seconds"] = round(time.perf_counter() - started, 1)
            return record
        eager, _ = run(kind, options, False, device, small, f"{out}/eager")
        captured, step = run(kind, options, True, device, small, f"{out}/captured")
    calls = (5 if small else 8) * options.get("epochs", 2)
    tolerance = 5e-2 if options.get("amp") else 1e-3
    diff = max((a.double() - eager[k].double()).abs().max().item() for k, a in captured.items()
               if a.is_floating_point() and a.numel())
    record.update(captures=step.captures, replays=step.replays, expected=(graphs, calls - WARMUP * graphs),
                  max_abs_diff=diff, tolerance=tolerance, seconds=round(time.perf_counter() - started, 1))
    record["ok"] = (step.captures, step.replays) == record["expected"] and diff <= tolerance
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checks", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    p.add_argument("--cpu", action="store_true", help="smoke mode: tiny runs through the CPU stand-in")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; --cpu runs the smoke mode", file=sys.stderr)
        return 2
    failed = 0
    with cpu_stand_in() if args.cpu else contextlib.nullcontext():
        for name in args.checks:
            record = check(name, "cpu" if args.cpu else "cuda", small=args.cpu)
            failed += not record["ok"]
            print(json.dumps(record), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
