"""Datasets as device-resident uint8 tensors and the batched, reproducible loader that augments them."""
from .datasets import ImageDataset, load_dataset, search_split
from .loader import Augment, DeviceLoader, crop_flip, cutout

__all__ = ["ImageDataset", "load_dataset", "search_split", "Augment", "DeviceLoader", "crop_flip", "cutout"]
