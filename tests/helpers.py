"""Helpers shared by the run tests: a run killed mid-way, a loss that turns NaN, capturable Adam on the CPU."""
import contextlib
import importlib

import pytest


class Killed(Exception):
    """Stands in for a SIGKILL within one process: raised where the run would have died."""


@contextlib.contextmanager
def killed_in_epoch(monkeypatch, loop_class, epoch: int):
    """A run started in the block dies when ``loop_class.train_epoch`` reaches ``epoch`` (0-based), after the
    checkpoints of the epochs before it; the block expects that death and restores the loop afterwards."""
    original = loop_class.train_epoch

    def dying(self, e, *args):
        if e == epoch:
            raise Killed
        return original(self, e, *args)

    monkeypatch.setattr(loop_class, "train_epoch", dying)
    try:
        with pytest.raises(Killed):
            yield
    finally:
        monkeypatch.setattr(loop_class, "train_epoch", original)


def nan_after(criterion, calls: int):
    """``criterion`` whose loss turns NaN after its first ``calls`` calls."""
    count = 0

    def poisoned(logits, y):
        nonlocal count
        count += 1
        loss = criterion(logits, y)
        return loss * float("nan") if count > calls else loss

    return poisoned


def capturable_adam_on_cpu(monkeypatch) -> None:
    """Adam with ``capturable=True`` on the CPU, as on a GPU: its step counters are tensors it never reads on
    the host (PyTorch accepts the flag on accelerators only)."""
    monkeypatch.setattr(importlib.import_module("torch.optim.adam"), "_get_capturable_supported_devices",
                        lambda *a: ["cpu"])
