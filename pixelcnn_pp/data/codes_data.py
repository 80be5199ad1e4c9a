"""Maps of discrete codes (a VQ-VAE's latents, segmentation maps, ...) as a data set, for a
PixelCNN++ prior with a K-way head. docs/DATA.md walks through this file as the example of a
custom DataLoader.

    python train.py --data_set codes --data_dir codes.npz [--class_conditional]
                    [--spatial_conditioning]

``data_dir`` is one .npz file holding:

    train_codes, test_codes      (N, H, W) integers in [0, num_categories)
    num_categories               a scalar: K
    train_labels, test_labels    optional (N,) class labels (used with --class_conditional)
    train_spatial, test_spatial  optional (N, Hs, Ws, D) float maps to condition on (used
                                 with --spatial_conditioning); H / Hs and W / Ws whole numbers

A file that breaks any of this gets one error naming the array and what is wrong.
"""

import os
import zipfile

import numpy as np

from pixelcnn_pp.data import loader
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError


class DataLoader(loader.DataLoader):
    """The ``subset`` ('train' or 'test') of the code maps in the .npz ``data_dir``."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False, return_spatial=False):
        loader.check_subset(subset)
        arrays = load(data_dir)
        codes, k = arrays[f"{subset}_codes"], arrays["num_categories"]
        super().__init__(codes, arrays.get(f"{subset}_labels"), batch_size, rng=rng,
                         shuffle=shuffle, return_labels=return_labels,
                         num_labels=arrays.get("num_labels"),
                         spatial=arrays.get(f"{subset}_spatial"),
                         return_spatial=return_spatial, num_categories=k)


def load(path):
    """The arrays of a codes .npz, checked: {"train_codes", "test_codes", "num_categories",
    and those of "train_labels", "test_labels", "num_labels", "train_spatial",
    "test_spatial" it has}."""
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"{path} is not a file: --data_set codes reads one .npz "
                                   "with train_codes, test_codes and num_categories "
                                   "(docs/DATA.md)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CorruptDatasetError(f"{path} is not a readable .npz ({e})") from e

    def bad(name, what):
        return CorruptDatasetError(f"{path}: {name} {what}")

    for name in ("train_codes", "test_codes", "num_categories"):
        if name not in arrays:
            raise bad(name, f"is missing (the file has {', '.join(sorted(arrays)) or 'none'})")
    k = arrays["num_categories"]
    if k.shape != () or not np.issubdtype(k.dtype, np.integer) or int(k) < 2:
        raise bad("num_categories", f"must be one integer >= 2; got {k.dtype} {k.shape} {k}")
    out = {"num_categories": int(k)}
    hw = None
    for split in ("train", "test"):
        name = f"{split}_codes"
        try:
            codes = loader.check_codes(arrays[name], out["num_categories"], name)
        except ValueError as e:
            raise CorruptDatasetError(f"{path}: {e}") from e
        if hw is not None and codes.shape[1:] != hw:
            raise bad(name, f"are {codes.shape[1:]} maps but train_codes are {hw}")
        hw = codes.shape[1:]
        out[name] = codes
    for kind in ("labels", "spatial"):
        present = [s for s in ("train", "test") if f"{s}_{kind}" in arrays]
        if len(present) == 1:
            other = "test" if present[0] == "train" else "train"
            raise bad(f"{other}_{kind}", f"is missing while {present[0]}_{kind} is there: "
                      "give both splits or neither")
    for split in ("train", "test") if "train_labels" in arrays else ():
        name, n = f"{split}_labels", len(out[f"{split}_codes"])
        labels = arrays[name]
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or (
                n and labels.min() < 0):
            raise bad(name, f"must be ({n},) integers >= 0, one per code map; got "
                      f"{labels.dtype} {labels.shape}")
        out[name] = labels.astype(np.int32)
    if "train_labels" in out:
        out["num_labels"] = int(max(out["train_labels"].max(initial=0),
                                    out["test_labels"].max(initial=0))) + 1
    shape = None
    for split in ("train", "test") if "train_spatial" in arrays else ():
        name, n = f"{split}_spatial", len(out[f"{split}_codes"])
        s = arrays[name]
        if s.ndim != 4 or len(s) != n or not np.issubdtype(s.dtype, np.floating):
            raise bad(name, f"must be ({n}, Hs, Ws, D) floats, one map per code map; got "
                      f"{s.dtype} {s.shape}")
        if not np.isfinite(s).all():
            raise bad(name, "holds NaN or infinite values")
        if shape is not None and s.shape[1:] != shape:
            raise bad(name, f"maps are {s.shape[1:]} but train_spatial's are {shape}")
        shape = s.shape[1:]
        if hw[0] % shape[0] or hw[1] % shape[1]:
            raise bad(name, f"maps are {shape[0]}x{shape[1]}: the code maps' {hw[0]}x{hw[1]} "
                      "must be whole multiples of them")
        out[name] = s.astype(np.float32)
    return out
