"""A user's own data: tensors or any map-style torch Dataset, held in memory, or a DataLoader, streamed.

:func:`as_image_dataset` reads ``(image, label)`` samples once into the uint8 :class:`ImageDataset` the
device-resident loader slices (the fast default); images may be uint8 or float in [0, 1], CHW or HWC
tensors, arrays or PIL images. Data too large for memory comes as a ``DataLoader``: :class:`StreamData`
keeps its dataset and worker settings, and :class:`StreamLoader` batches index subsets of it (the search's
train/val split) through DataLoader workers. Streamed images are used as the dataset's own transforms
return them (normalised, augmented float tensors): gradnas adds no augmentation to them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

from ..errors import GradnasError
from .datasets import ImageDataset, _as_labels, _as_nchw, _channel_stats

Data = ImageDataset | Dataset | tuple | DataLoader


def as_image_dataset(data: Data, num_classes: int | None = None, test: Dataset | tuple | None = None,
                     name: str = "custom") -> ImageDataset:
    """``data`` (an ImageDataset, tensors ``(x, y)`` or a map-style Dataset of ``(image, label)``) in memory.

    ``test`` is the test split in the same form; without it every fifth sample is held out, as for image
    folders. The class count is ``num_classes``, else ``len(data.classes)``, else the largest label + 1."""
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, DataLoader):
        raise GradnasError("a DataLoader streams its data; this needs data in memory (pass its dataset)")
    x, y = _read(data, "data")
    if test is None:
        held = torch.arange(len(y)) % 5 == 4
        x, y, x_test, y_test = x[~held], y[~held], x[held], y[held]
    else:
        x_test, y_test = _read(test, "test")
        if x_test.shape[1:] != x.shape[1:]:
            raise GradnasError(f"test images are {tuple(x_test.shape[1:])}, training images {tuple(x.shape[1:])}")
    if not len(y) or not len(y_test):
        raise GradnasError(f"{name}: {len(y)} training and {len(y_test)} test samples; both need some")
    classes = _num_classes(data, num_classes, int(max(y.max(), y_test.max())) + 1)
    mean, std = _channel_stats(x)
    return ImageDataset(name, x, y, x_test, y_test, classes, mean, std, crop_padding=max(1, x.shape[-1] // 8))


def _read(data: Dataset | tuple, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×C×H×W images and int64 labels of tensors ``(x, y)`` or of every sample of a Dataset."""
    if isinstance(data, tuple):
        if len(data) != 2:
            raise GradnasError(f"{where}: expected tensors (x, y), got a tuple of {len(data)}")
        x, y = (np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a) for a in data)
    else:
        try:
            samples = [data[i] for i in range(len(data))]
        except TypeError:
            raise GradnasError(f"{where}: {type(data).__name__} is not a map-style dataset (no len / indexing); "
                               "pass a DataLoader to stream it") from None
        try:
            x = np.stack([_pixels(s[0]) for s in samples]) if samples else np.zeros((0, 1, 1, 1), np.uint8)
        except ValueError:
            raise GradnasError(f"{where}: images of different shapes; resize them in the dataset's transform") from None
        y = np.asarray([int(s[1]) for s in samples])
    x = _pixels(x)
    return _as_nchw(x, where), _as_labels(y, len(x), f"{where} labels")


def _pixels(image: Any) -> np.ndarray:
    """uint8 pixels of an image or batch: tensors and arrays as they are, PIL images decoded, floats in
    [0, 1] (a ToTensor output) scaled to 0..255."""
    a = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not (0 <= a.min() and a.max() <= 1):
            raise GradnasError(f"float images must lie in [0, 1] to be held in memory, got {a.min():.3g}..{a.max():.3g}; "
                               "pass uint8 images, or stream normalised ones with a DataLoader")
        a = np.rint(a * 255).astype(np.uint8)
    return a


def _num_classes(data: object, given: int | None, labels: int | None) -> int:
    classes = getattr(data, "classes", None)
    n = given if given is not None else len(classes) if classes is not None else labels
    if n is None:
        raise GradnasError("cannot infer the class count of the stream (no classes attribute); pass num_classes")
    if n < 1 or labels is not None and labels > n:
        raise GradnasError(f"{n} classes, but labels go up to {labels - 1}" if labels else f"{n} classes")
    return n


@dataclass(repr=False)
class StreamData:
    """A dataset read batch by batch through DataLoader workers, with what the network needs to know of it.

    Its images come normalised by the dataset's transform, so a model trained on it records mean 0, std 1:
    inputs are what that transform gives."""
    name: str
    dataset: Dataset
    like: DataLoader                  # the workers, collate function and memory pinning to reuse
    num_classes: int
    in_channels: int
    image_size: int
    test: StreamData | None = None    # the test split, for training

    @property
    def mean(self) -> tuple[float, ...]:
        return (0.0,) * self.in_channels

    @property
    def std(self) -> tuple[float, ...]:
        return (1.0,) * self.in_channels


def stream_data(loader: DataLoader, num_classes: int | None = None, test: DataLoader | None = None,
                name: str = "stream") -> StreamData:
    """The dataset of ``loader`` (and of ``test``, the test split training evaluates on) for streaming; the
    class count is ``num_classes`` or ``len(dataset.classes)``."""
    dataset = loader.dataset
    try:
        shape = tuple(torch.as_tensor(np.asarray(dataset[0][0])).shape)
    except (TypeError, IndexError):
        raise GradnasError("the DataLoader's dataset must be map-style: samples (image, label) by index") from None
    if len(shape) != 3:
        raise GradnasError(f"streamed images must be C×H×W tensors, got shape {shape}")
    classes = _num_classes(dataset, num_classes, None)
    held_out = stream_data(test, classes, name=f"{name} test") if test is not None else None
    return StreamData(name, dataset, loader, classes, shape[0], shape[-1], held_out)


class StreamLoader:
    """Batches of ``indices`` (default all) of a streamed dataset, moved to ``device``: shuffled, whole batches
    only (training) or every sample in order (evaluation). Every ``iter()`` is a new epoch; ``state_dict``
    holds the shuffling generator, so a resumed run draws the same orders. Data parallel: each rank draws
    the same global batch of batch_size × world samples and keeps its slice."""

    def __init__(self, data: StreamData, indices: torch.Tensor | None, batch_size: int, device: torch.device,
                 seed: int = 0, shard: tuple[int, int] = (0, 1), shuffle: bool = True):
        self.device, (self.rank, self.world_size), self.batch_size = torch.device(device), shard, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        order = list(range(len(data.dataset))) if indices is None else indices.tolist()
        sampler = SubsetRandomSampler(order, generator=self.generator) if shuffle else order
        like = data.like
        self.loader = DataLoader(data.dataset, batch_size * self.world_size, sampler=sampler, drop_last=shuffle,
                                 num_workers=like.num_workers, collate_fn=like.collate_fn, pin_memory=like.pin_memory,
                                 worker_init_fn=like.worker_init_fn, persistent_workers=like.persistent_workers)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for x, y in self.loader:
            if not x.is_floating_point():
                raise GradnasError(f"streamed images must be float tensors (normalised by the dataset's transform), "
                                   f"got {x.dtype}")
            yield x[mine].to(self.device, non_blocking=True), y[mine].to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
