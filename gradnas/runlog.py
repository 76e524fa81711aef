"""What a run leaves behind besides its checkpoint: JSON-lines log, TensorBoard scalars and images, environment."""
from __future__ import annotations

import json
import logging
import platform
import subprocess
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .errors import GradnasError
from .extras import require
from .rundir import record, write_atomic

log = logging.getLogger("gradnas")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device, seed: int, deterministic: bool) -> dict[str, Any]:
    return {
        "gradnas": __version__, "git_commit": git_commit(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                               else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "seed": seed, "deterministic": deterministic,
    }


class RunLog:
    """Per-epoch records as JSON lines plus TensorBoard scalars for every numeric field and, given ``images``
    (record → {tag: H×W×3 uint8 array}), TensorBoard images. Without the tensorboard (or, for images, the plot)
    extra it warns once and writes the JSON lines alone.

    The log is rewritten whole and atomically with every record (it holds one line per epoch), so a kill or a
    full disk never leaves half a line."""

    def __init__(self, out: Path, resume_epoch: int = 0,
                 images: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.path = out / "log.jsonl"
        # A resumed run redoes the epochs after its checkpoint: drop their lines if a kill left any.
        # Written with the first record: setting up writes nothing (an overwritten run is still in place).
        self._lines = [line for line in self._read() if _epoch(line) < resume_epoch]
        self._tb_dir = out / "tensorboard"
        self._writer = None  # False once TensorBoard turned out to be missing
        self._images = images

    def _read(self) -> list[str]:
        return [ln for ln in self.path.read_text().splitlines() if ln.strip()] if self.path.exists() else []

    @property
    def writer(self):
        if self._writer is None:
            try:
                require("tensorboard", "writing TensorBoard logs")  # imported on first use: it is slow to load
            except GradnasError as err:
                log.warning("no TensorBoard logs: %s", err)
                self._writer = False
            else:
                from torch.utils.tensorboard import SummaryWriter
                self._writer = SummaryWriter(str(self._tb_dir))
                record(self._tb_dir)
        return self._writer or None

    def write(self, record: dict[str, Any]) -> None:
        self._lines.append(json.dumps(record))
        write_atomic(self.path, "".join(line + "\n" for line in self._lines))
        writer = self.writer
        if writer is None:
            return
        for key, value in _scalars(record):
            writer.add_scalar(key, value, record["epoch"])
        for tag, image in self._render(record).items():
            writer.add_image(tag, image, record["epoch"], dataformats="HWC")
        writer.flush()

    def _render(self, record: dict[str, Any]) -> dict[str, Any]:
        if self._images is None:
            return {}
        try:
            return self._images(record)
        except GradnasError as err:
            log.warning("no TensorBoard images: %s", err)
            self._images = None
            return {}

    def history(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._lines]

    def close(self) -> None:
        if self._writer:
            self._writer.close()


def _epoch(line: str) -> float:
    """The epoch of a log line; a line a kill cut short counts as not written."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _scalars(record: dict[str, Any], prefix: str = ""):
    for key, value in record.items():
        if isinstance(value, bool) or key == "epoch":
            continue
        if isinstance(value, (int, float)):
            yield prefix + key, value
        elif isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
