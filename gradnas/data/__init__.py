"""Datasets as device-resident uint8 tensors and the batched, reproducible loader that augments them."""
from .custom import Data, StreamData, StreamLoader, as_image_dataset, stream_data
from .datasets import ImageDataset, load_dataset, search_split
from .loader import Augment, DeviceLoader, check_cutout, crop_flip, cutout, cutout_pixels, training_augment

__all__ = ["Data", "StreamData", "StreamLoader", "as_image_dataset", "stream_data", "ImageDataset", "load_dataset",
           "search_split", "Augment", "DeviceLoader", "crop_flip", "cutout", "check_cutout", "cutout_pixels",
           "training_augment"]
