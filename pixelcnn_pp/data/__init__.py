"""Data sets for PixelCNN++. Each module has a ``DataLoader`` with the original code's
contract (see loader.py); ``make_loader`` builds one by the name a ``--data_set`` flag uses,
or from ``"package.module[:Class]"`` naming a user's own DataLoader (docs/DATA.md)."""

import difflib
import importlib

from pixelcnn_pp.data.loader import CorruptDatasetError, DataLoader, DatasetNotFoundError
from pixelcnn_pp.errors import UsageError

__all__ = ["DataLoader", "DatasetNotFoundError", "CorruptDatasetError", "DATA_SETS",
           "check_data_set_name", "loader_class", "make_loader"]

# --data_set name -> (module, extra constructor arguments)
DATA_SETS = {
    "demo": ("pixelcnn_pp.data.demo_data", {}),           # shipped in data/demo/, offline
    "cifar": ("pixelcnn_pp.data.cifar10_data", {}),       # CIFAR-10, downloaded if absent
    "imagenet": ("pixelcnn_pp.data.imagenet_data", {"size": 32}),   # Small ImageNet 32x32
    "imagenet64": ("pixelcnn_pp.data.imagenet_data", {"size": 64}),
    "mnist": ("pixelcnn_pp.data.mnist_data", {}),         # MNIST, downloaded if absent
    "folder": ("pixelcnn_pp.data.folder_data", {}),       # any folder of image files
    "codes": ("pixelcnn_pp.data.codes_data", {}),         # maps of discrete codes (.npz)
}


def check_data_set_name(data_set):
    """A --data_set is one of DATA_SETS or 'package.module[:Class]'; else UsageError."""
    if data_set in DATA_SETS:
        return
    module_name = data_set.partition(":")[0]
    if not module_name or ("." not in module_name and ":" not in data_set):
        close = difflib.get_close_matches(data_set, list(DATA_SETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown --data_set {data_set!r}{hint}: use one of "
                         f"{', '.join(sorted(DATA_SETS))}, or 'package.module[:Class]' "
                         "naming your own DataLoader")


def loader_class(data_set):
    """(the DataLoader class, its extra constructor arguments) for a --data_set value; the
    class's module is imported now."""
    check_data_set_name(data_set)
    if data_set in DATA_SETS:
        module_name, extra = DATA_SETS[data_set]
        cls_name = "DataLoader"
    else:
        module_name, _, cls_name = data_set.partition(":")
        extra = {}
    return getattr(importlib.import_module(module_name), cls_name or "DataLoader"), extra


def make_loader(data_set, data_dir, subset, batch_size, rng=None, shuffle=False,
                return_labels=False, strict_images=False, return_spatial=False):
    """A DataLoader for a --data_set name, or for "package.module" / "package.module:Class"
    naming a custom DataLoader class (default class name: DataLoader)."""
    cls, extra = loader_class(data_set)
    if strict_images:   # only the folder loader reads files that may be unusable
        extra = {**extra, "strict": True}
    if return_spatial:  # only loaders with spatial maps take it
        extra = {**extra, "return_spatial": True}
    return cls(data_dir, subset, batch_size, rng=rng, shuffle=shuffle,
               return_labels=return_labels, **extra)
