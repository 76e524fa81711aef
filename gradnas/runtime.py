"""What every training loop of gradnas needs around its steps: the device, mixed precision, and a guard
that stops a run at its first non-finite loss without synchronising with the device at every step.

Shared by the search loop and the trainer of found architectures.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import GradnasError

log = logging.getLogger("gradnas")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; a named device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GradnasError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GradnasError("device 'cuda' asked for, but no CUDA device is available")
    return device


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """bfloat16 where the GPU supports it, else float16 (which needs loss scaling); no autocast on the CPU,
    where reduced precision is slower for these convolutions than float32."""
    if not amp or device.type != "cuda":
        if amp:
            log.warning("--amp has no effect on %s; running in float32", device.type)
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class FiniteGuard:
    """Remembers the first step of an epoch whose loss was not finite, as a device tensor.

    :meth:`update` costs two tiny kernels and no host synchronisation; :meth:`check`, called at the logging
    interval, reads the flag and stops the run with one clear line.
    """

    def __init__(self, device: torch.device):
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)

    def update(self, step: int, *losses: torch.Tensor) -> None:
        bad = ~torch.isfinite(losses[0])
        for loss in losses[1:]:
            bad |= ~torch.isfinite(loss)
        self.first_bad = torch.where((self.first_bad < 0) & bad, step, self.first_bad)

    def check(self, epoch: int, checkpoint: Path, command: str, options: str) -> None:
        step = int(self.first_bad.item())
        if step >= 0:
            raise GradnasError(stopped(f"non-finite loss at epoch {epoch + 1}, step {step + 1}", checkpoint, command,
                                       options))


def stopped(what: str, checkpoint: Path, command: str, options: str) -> str:
    """The line of a run of ``gradnas command`` stopped by a divergence, with the way on that exists: resume the
    checkpoint with lower rates (``options``, e.g. ``"--lr"``), or, before the first one, start again."""
    if checkpoint.is_file():
        return (f"{what}; stopped. The last good checkpoint ({checkpoint}) is intact: resume it with a lower "
                f"{options} (gradnas {command} --resume {checkpoint.parent} {options.split()[0]} VALUE)")
    return f"{what}; stopped before the first checkpoint: start again with a lower {options}"
