"""Data sets for PixelCNN++. Each module has a `DataLoader` with the original code's contract
(see loader.py); `get_loader_class(name)` picks one by the name a --data_set flag would use."""

import importlib

from data.loader import CorruptDatasetError, DataLoader, DatasetNotFoundError

LOADERS = {
    "cifar": "data.cifar10_data",      # CIFAR-10, downloaded if absent
    "imagenet": "data.imagenet_data",  # downsampled ImageNet 32x32 / 64x64 (size=...)
    "mnist": "data.mnist_data",        # MNIST, downloaded if absent (pad_to=...)
    "folder": "data.folder_data",      # any folder of images (image_size=..., channels=...)
    "demo": "data.demo_data",          # the small demo set shipped in data/demo/, offline
}


def get_loader_class(name):
    """The DataLoader class for a data set name in LOADERS (its module is imported now)."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(LOADERS)}")
    return importlib.import_module(LOADERS[name]).DataLoader


__all__ = ["DataLoader", "DatasetNotFoundError", "CorruptDatasetError", "LOADERS",
           "get_loader_class"]
