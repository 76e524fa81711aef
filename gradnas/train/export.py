"""Deployable exports of a trained model: TorchScript (traced) and ONNX.

The exported graph maps a normalised N×C×H×W float batch to logits (the ``(logits, aux)`` pair of the
evaluation nets reduced to its logits) with a dynamic batch dimension. Inputs are normalised with the
training data's ``mean``/``std``, saved with the model and printed by ``gradnas export``. After writing,
the export runs the file on a random batch of another size and reports its largest difference from the
PyTorch model (for ONNX, when ``onnxruntime`` is installed).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import GradnasError
from ..extras import missing_extra
from ..models.saved import SavedModel, read_model
from ..rundir import atomic_path, run_file

FORMATS = ("torchscript", "onnx")


class Logits(nn.Module):
    """The evaluation net with only its logits as output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


@dataclass
class Export:
    path: Path
    max_abs_diff: float | None  # exported vs PyTorch logits on a random batch; None when no runtime was at hand
    meta: dict[str, Any]        # the model's input description: in_channels, image_size, mean, std, ...


def export_model(source: str | Path, fmt: str, out: str | Path, overwrite: bool = False) -> Export:
    """Export the trained model of a run directory or model file to ``out`` in format ``fmt``, atomically. A file
    that a run directory holds (its model, checkpoint, log, ...) is replaced only with ``overwrite``."""
    if fmt not in FORMATS:
        raise GradnasError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    if out.is_dir():
        raise GradnasError(f"--out {out} is a directory; name the file to write")
    if not overwrite and run_file(out):
        raise GradnasError(f"{out} is a file of the run in {out.parent}; export elsewhere or pass --overwrite "
                           "to replace it")
    saved = read_model(source)
    model = Logits(saved.build("cpu")).eval()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GradnasError(f"cannot create {out.parent}: {err.strerror or type(err).__name__}") from None
    example = torch.randn(saved.input_shape(2))
    check = _torchscript if fmt == "torchscript" else _onnx
    with atomic_path(out) as tmp:  # a failed or killed export leaves the file it would replace whole
        diff = check(model, example, tmp, saved)
    return Export(out, diff, saved.meta)


def _check_input(saved: SavedModel) -> torch.Tensor:
    """A batch of a size other than the traced one: it also checks that the batch dimension stays dynamic."""
    return torch.randn(saved.input_shape(3), generator=torch.Generator().manual_seed(0))


def _torchscript(model: nn.Module, example: torch.Tensor, out: Path, saved: SavedModel) -> float:
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, yet TorchScript is still what LibTorch and most
        # C++ and mobile runtimes load; tracing suits these nets, which have no data-dependent control flow.
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():  # the check below replaces trace's own, which runs the model several more times
            torch.jit.trace(model, example, check_trace=False).save(str(out))
        loaded = torch.jit.load(str(out))
    x = _check_input(saved)
    with torch.no_grad():
        return float((loaded(x) - model(x)).abs().max())


def _onnx(model: nn.Module, example: torch.Tensor, out: Path, saved: SavedModel) -> float | None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (the torch.export-based exporter writes its graphs with it)
    except ImportError as err:
        raise missing_extra(err, "ONNX export") from None
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (example,), str(out), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False, verbose=False)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _check_input(saved)
    with torch.no_grad():
        expected = model(x)
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    return float((got - expected).abs().max())
