"""A trained network in one file: genotype, constructor arguments, weights and input normalisation.

:func:`load_model` rebuilds the network in eval mode from that file alone, without the training
configuration or the training code. The file holds only tensors, strings and numbers, so it is read with
``torch.load(weights_only=True)`` and cannot run code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import GradnasError, first_line
from ..genotypes import Genotype, genotype_from_dict, genotype_to_dict
from .darts_eval import NetworkCIFAR, NetworkImageNet
from .nb201_eval import NB201Network

FORMAT, VERSION, FILENAME = "gradnas-model", 1, "model.pt"
#: What a model file must hold (and of which type), and the input description its ``meta`` must give.
PARTS = {"network": str, "kwargs": dict, "genotype": dict, "state_dict": dict, "meta": dict}
META = ("num_classes", "in_channels", "image_size", "mean", "std")
NETWORKS: dict[str, type[nn.Module]] = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet, "nb201": NB201Network}


def build_network(network: str, genotype: Genotype, **kwargs: Any) -> nn.Module:
    if network not in NETWORKS:
        raise GradnasError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
    return NETWORKS[network](genotype, **kwargs)


@dataclass
class SavedModel:
    network: str                          # a NETWORKS key
    kwargs: dict[str, Any]                # constructor arguments besides the genotype
    genotype: Genotype
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]                  # num_classes, in_channels, image_size, mean, std, dataset, ...
    source: str = FILENAME                # the file it was read from, for messages

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        try:
            model = build_network(self.network, self.genotype, **self.kwargs)
            model.load_state_dict(self.state_dict)
        except (RuntimeError, TypeError, ValueError, KeyError) as err:
            raise GradnasError(f"{self.source}: the weights do not fit the network it describes "
                               f"({first_line(err)})") from None
        return model.to(device).eval()

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return batch, self.meta["in_channels"], self.meta["image_size"], self.meta["image_size"]


def model_record(network: str, kwargs: dict[str, Any], genotype: Genotype, model: nn.Module,
                 meta: dict[str, Any]) -> dict[str, Any]:
    """The inference form of a trained ``model`` as a plain dict: the auxiliary head (a training aid) and
    drop path are left out, weights are on the CPU in the default memory format."""
    kwargs = dict(kwargs)
    if network != "nb201":
        kwargs.update(auxiliary=False, drop_path_prob=0.0)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not k.startswith("auxiliary_head.")}
    return {"format": FORMAT, "version": VERSION, "network": network, "kwargs": kwargs,
            "genotype": genotype_to_dict(genotype), "state_dict": state, "meta": dict(meta)}


def model_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/model.pt`` for a run directory."""
    path = Path(path).expanduser()
    return path / FILENAME if path.is_dir() else path


def read_model(path: str | Path) -> SavedModel:
    file = model_path(path)
    if not file.is_file():
        hint = " (the run has not finished: resume it with gradnas train --resume)" if (
            file.parent / "train_checkpoint.pt").is_file() else ""
        raise GradnasError(f"no trained model at {file}{hint}")
    try:
        d = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise GradnasError(f"{file} is corrupt or not a gradnas model ({type(err).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise GradnasError(f"{file} is not a gradnas model file")
    if d.get("version") != VERSION:
        raise GradnasError(f"{file}: unsupported model version {d.get('version')!r}; this gradnas reads {VERSION}")
    missing = [k for k, kind in PARTS.items() if not isinstance(d.get(k), kind)]
    missing += [f"meta.{k}" for k in META if not missing and k not in d["meta"]]
    if missing:
        raise GradnasError(f"{file} lacks {', '.join(missing)}: damaged or written by another version")
    return SavedModel(d["network"], d["kwargs"], genotype_from_dict(d["genotype"], str(file)), d["state_dict"],
                      d["meta"], str(file))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a run directory (its ``model.pt``) or of a model file, in eval mode.

    It returns ``(logits, None)`` like every evaluation net; inputs are normalised with the training data's
    ``mean``/``std`` (``read_model(path).meta``).
    """
    return read_model(path).build(device)
