"""Checkpoints of tensors and plain values only: written atomically, read with ``weights_only=True``.

A run killed at any moment leaves the previous checkpoint intact; a crafted file cannot run code when it is
loaded (``torch.load`` refuses every object but tensors, numbers, strings and containers of them); a state
whose weights, buffers or optimiser moments are not all finite is never written, so the checkpoint kept is
always one a run can resume from.
"""
from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import GradnasError
from ..rundir import write_atomic

#: Which command writes a checkpoint of each name.
_COMMANDS = {"checkpoint.pt": "search", "train_checkpoint.pt": "train"}
#: The parts of a state whose floating-point tensors must be finite before it is written.
CHECKED = ("model", "optimizer", "update")


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Serialise ``state`` and write it over ``path`` atomically (:func:`gradnas.rundir.write_atomic`)."""
    buffer = io.BytesIO()  # serialised first: a full disk is then a plain write error of the atomic write
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def nonfinite(state: dict[str, Any], parts: tuple[str, ...] = CHECKED) -> list[str]:
    """Names of the floating-point tensors of ``state[part]`` that hold a NaN or an infinity (one host sync)."""
    named = [(name, t) for part in parts if part in state for name, t in _tensors(state[part], part)
             if t.is_floating_point()]
    if not named:
        return []
    flags = [torch.isfinite(t).all() for _, t in named]
    finite = torch.stack([f.to(flags[0].device) for f in flags]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def _tensors(value: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{name}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{name}.{i}")


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ("epoch", "config")) -> dict[str, Any]:
    """The state saved at ``path``, which must hold the ``required`` entries; one line for any other file."""
    path = Path(path)
    if not path.is_file():
        other = next((name for name in _COMMANDS if name != path.name and (path.parent / name).is_file()), None)
        if other is not None:  # the other command's run: --overwrite would replace it
            raise GradnasError(f"{path.parent} holds a {_COMMANDS[other]} run ({other}), not a "
                               f"{_COMMANDS.get(path.name, 'gradnas')} run: resume it with gradnas "
                               f"{_COMMANDS[other]} --resume {path.parent}")
        early = path.parent.is_dir() and any(path.parent.iterdir())
        raise GradnasError(f"no checkpoint at {path}" + (" (no epoch of its run has finished; unless that run is "
                                                          "still going, start it again with --overwrite)" if early else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # what weights_only raises for anything but tensors and plain values
        found = re.search(r"Unsupported (global|operand)[^.]*", str(err))
        reason = found.group(0) if found else "not plain data"
        raise GradnasError(f"checkpoint {path} holds objects other than tensors and plain values; refused to "
                           f"load it ({reason})") from None
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise GradnasError(f"checkpoint {path} is corrupt or unreadable ({type(err).__name__})") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise GradnasError(f"checkpoint {path} is not a gradnas checkpoint")
    missing = [k for k in required if k not in state]
    if missing:
        raise GradnasError(f"checkpoint {path} lacks {', '.join(missing)}: written by another version or damaged")
    if not isinstance(state["epoch"], int) or not isinstance(state.get("config", {}), dict):
        raise GradnasError(f"checkpoint {path} is not a gradnas checkpoint")
    bad = nonfinite(state)
    if bad:  # never written by a run (see save_atomic's callers): lower rates would not help
        raise GradnasError(f"checkpoint {path} holds a non-finite {bad[0]}; gradnas writes only finite ones, so the "
                           "file was damaged or edited and cannot be resumed")
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states as tensors and plain values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
