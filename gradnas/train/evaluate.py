"""Test-set metrics and model cost of a trained network: top-1 (top-5), loss, parameters, multiply-accumulates.

Multiply-accumulates are counted with forward hooks on every ``Conv2d`` and ``Linear`` for one image in eval
mode (the auxiliary head does not run): a convolution costs ``out_elements · in_channels/groups · kh · kw``,
a linear layer ``in_features · out_features``. Batch norm, pooling, additions and activations are not counted.
The count equals half the FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` reports for these networks
(tested). Published "multiply-adds" come from other counters: DARTS reports 574 M for DARTS_V2 in the ImageNet
mobile setting, where this count gives 530 M (224 px, 1000 classes).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import DeviceLoader, load_dataset
from ..errors import GradnasError
from ..models import count_parameters
from ..models.saved import SavedModel, read_model
from ..rundir import write_atomic
from ..runtime import resolve_device


def count_macs(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "cpu") -> int:
    """Multiply-accumulates of one forward pass of one image of shape ``input_shape[1:]``."""
    total = 0

    def conv(m: nn.Conv2d, inputs, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: nn.Linear, inputs, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape[1:], device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def evaluate(model: nn.Module, loader: DeviceLoader, memory_format: torch.memory_format = torch.contiguous_format,
             amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean cross-entropy, top-1 and (more than 10 classes) top-5 accuracy in % over every batch of ``loader``,
    under autocast to ``amp_dtype`` when given. Sums accumulate on the device; the host reads them once.
    """
    model.eval()
    totals, n = torch.zeros(3, dtype=torch.float64, device=loader.device), 0
    with torch.no_grad():
        for x, y in loader:
            with torch.autocast(loader.device.type, amp_dtype) if amp_dtype else contextlib.nullcontext():
                logits = model(x.contiguous(memory_format=memory_format))[0]
            logits = logits.float()
            hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]  # B×k, best first
            totals += torch.stack([F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum(), hits.sum()])
            n += len(y)
    if n == 0:
        raise GradnasError("evaluation set is empty")
    loss, top1, top5 = totals.tolist()
    metrics = {"test_loss": loss / n, "test_acc": 100 * top1 / n}
    if logits.shape[1] > 10:
        metrics["test_top5"] = 100 * top5 / n
    return metrics


def eval_loader(x: torch.Tensor, y: torch.Tensor, mean, std, batch_size: int, device: torch.device) -> DeviceLoader:
    """Every test image once, in order, without augmentation."""
    return DeviceLoader(x, y, batch_size, mean, std, augment=None, shuffle=False, drop_last=False, device=device)


def evaluate_saved(path: str | Path, data: str | None = None, data_root: str | None = None, batch_size: int = 256,
                   device: str = "auto", write: bool = True) -> dict[str, Any]:
    """Evaluate the trained model of a run directory (or a model file) on the test split of ``data`` (default:
    the data it was trained on), normalised with its training statistics; write ``eval.json`` beside it."""
    saved: SavedModel = read_model(path)
    dev = resolve_device(device)
    meta = saved.meta
    data = data or meta.get("data")
    if not data:
        raise GradnasError("the model file does not name its training data; pass --data")
    dataset = load_dataset(data, data_root or meta.get("data_root"), image_size=meta["image_size"])
    if dataset.in_channels != meta["in_channels"]:
        raise GradnasError(f"{dataset.name} has {dataset.in_channels}-channel images; the model takes {meta['in_channels']}")
    if int(dataset.y_test.max()) >= meta["num_classes"]:
        raise GradnasError(f"{dataset.name} has labels up to {int(dataset.y_test.max())}; "
                           f"the model has {meta['num_classes']} classes")
    model = saved.build(dev)
    loader = eval_loader(dataset.x_test, dataset.y_test, meta["mean"], meta["std"], batch_size, dev)
    metrics: dict[str, Any] = {"data": dataset.name, "images": len(dataset.y_test), **evaluate(model, loader),
                               "params": count_parameters(model), "macs": count_macs(model, saved.input_shape(), dev)}
    if write:
        out = Path(path)
        out = out if out.is_dir() else out.parent
        write_atomic(out / "eval.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def format_metrics(m: dict[str, Any]) -> str:
    top5 = f"  top-5 {m['test_top5']:.2f}%" if "test_top5" in m else ""
    return (f"{m['data']} test ({m['images']:,} images): top-1 {m['test_acc']:.2f}%{top5}  loss {m['test_loss']:.4f}\n"
            f"parameters {m['params']:,} ({m['params'] / 1e6:.2f} M), multiply-accumulates per image "
            f"{m['macs']:,} ({m['macs'] / 1e6:.1f} M)")
