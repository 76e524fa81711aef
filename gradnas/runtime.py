"""What every training loop of gradnas needs around its steps: the device, mixed precision, a guard that
stops a run at its first non-finite loss without synchronising with the device at every step, and a warning
when the loss has not left chance level after the first epochs.

Shared by the search loop and the trainer of found architectures.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from .errors import GradnasError

log = logging.getLogger("gradnas")

#: Epochs after which a training loss still at ln(classes) is reported.
CHANCE_EPOCHS = 2


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


def warn_if_at_chance(history: list[dict], num_classes: int, epochs: int) -> str | None:
    """Log one warning line, and return it, when after the run's first ``CHANCE_EPOCHS`` epochs (all of them
    when fewer) the mean training loss is not 2 % below ln(classes), the loss of a uniform guess, and has not
    fallen by a tenth since the first epoch: the run has learnt nothing. (A loss far above chance that falls
    is a bad start, not a stall.) Checked at that epoch only, so a run warns at most once."""
    train_losses = [record["train_loss"] for record in history]
    chance = math.log(num_classes)
    first = min(CHANCE_EPOCHS, epochs)
    if len(train_losses) != first or train_losses[-1] < 0.98 * chance or train_losses[-1] < 0.9 * train_losses[0]:
        return None
    warning = (f"training loss {train_losses[-1]:.3f} after {first} epoch(s) is not below ln({num_classes}) = "
               f"{chance:.3f}, chance level: the network is not learning. Likely causes: augmentation that erases "
               f"the images (--cutout is a fraction of the image side), a learning rate too high or too low (--lr), "
               f"or labels that do not follow the images (--data)")
    log.warning("gradnas: warning: %s", warning)
    return warning
