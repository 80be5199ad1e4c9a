"""Downsampled ImageNet at 32x32 or 64x64, in either of its two published forms.

1. Chrabaszcz, Loshchilov & Hutter 2017 ("A downsampled variant of ImageNet"), the form
   available today: 1,281,167 training and 50,000 validation images with labels (1000 classes).
   Imagenet{S}_train.zip / Imagenet{S}_val.zip (S = 32 or 64; the 64x64 training set comes in
   two parts) unpack to pickled batches, or the _npz variants to .npz files:
       data_dir/Imagenet32_train/train_data_batch_1 .. train_data_batch_10
       data_dir/Imagenet32_val/val_data
       data_dir/Imagenet32_train_npz/train_data_batch_1.npz ..   (or the .npz files)
       data_dir/Imagenet32_val_npz/val_data.npz
   Every folder directly inside data_dir whose name starts with "Imagenet32" (or 64) is
   searched, and data_dir itself. Each batch is a dict: 'data' uint8 (N, 3*S*S) in R, G, B
   planes, 'labels' 1..1000 (one-based; converted here to 0..999), 'mean'.

2. van den Oord et al. 2016 (Pixel RNN), the form the original PixelCNN++ code reads: folders
   of PNGs without labels, `train_32x32/` and `valid_32x32/` (`train_64x64/`, `valid_64x64/`),
   in data_dir or data_dir/small_imagenet/. Read once (sorted by file name) and cached as
   `train_32x32.npz` / `valid_32x32.npz` beside the folders; the cache is used as long as the
   folder holds as many PNGs as it did (or is gone). Delete the .npz to rebuild it. The
   original code's own cache, `imgnet_32x32.npz` (trainx, testx), is read too.

When both are present, the labelled batches (1) are used. Neither can be downloaded
automatically: ImageNet's terms require each user to sign in and accept them.
"""

import glob
import os

import numpy as np
from PIL import Image

from pixelcnn_pp.data import loader
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError
from pixelcnn_pp.errors import InvalidInputError

SIZES = (32, 64)
NUM_TRAIN_BATCHES = 10


class DataLoader(loader.DataLoader):
    """Downsampled ImageNet batches: (batch_size, size, size, 3) uint8; labels 0..999 when the
    data came as Chrabaszcz et al.'s batches, none for the PNG folders."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False, size=32):
        x, y = load(data_dir, subset, size)
        if return_labels and y is None:
            raise InvalidInputError("return_labels=True, but this ImageNet copy is the PNG-folder "
                                    "form (train_{0}x{0}/), which has no labels: use the labelled "
                                    "Imagenet{0}_train / Imagenet{0}_val batches".format(size))
        super().__init__(x, y, batch_size, rng, shuffle, return_labels,
                         num_labels=None if y is None else 1000)


def load(data_dir, subset="train", size=32):
    """(x (N, size, size, 3) uint8, y (N,) int32 in 0..999 or None for the PNG folders)."""
    loader.check_subset(subset)
    if size not in SIZES:
        raise InvalidInputError(f"downsampled ImageNet comes in sizes {SIZES}; got {size}")
    files = find_batches(data_dir, subset, size)
    if files:
        return load_batches(files, size)
    folder, cache = find_png_folder(data_dir, subset, size)
    if folder or cache:
        return load_png_folder(folder, cache, size), None
    for where in (data_dir, os.path.join(data_dir, "small_imagenet")):
        legacy = os.path.join(where, f"imgnet_{size}x{size}.npz")   # the original code's cache
        if os.path.isfile(legacy):
            with np.load(legacy) as f:
                return f["trainx" if subset == "train" else "testx"], None
    raise DatasetNotFoundError(_not_found_message(data_dir, subset, size))


# --- Chrabaszcz et al. 2017: pickled or .npz batches -------------------------------------------

def find_batches(data_dir, subset, size):
    """Paths of the subset's batch files (pickle or .npz), [] if none; an error if some of the
    ten training batches are there and others not."""
    names = [f"train_data_batch_{i}" for i in range(1, NUM_TRAIN_BATCHES + 1)] \
        if subset == "train" else ["val_data"]
    folders = [data_dir] + sorted(glob.glob(os.path.join(data_dir, f"[Ii]mage[Nn]et{size}*")))
    found = {}
    for name in names:
        for folder in folders:
            for path in (os.path.join(folder, name), os.path.join(folder, name + ".npz")):
                if name not in found and os.path.isfile(path) and _batch_size_ok(path, size):
                    found[name] = path
    missing = [n for n in names if n not in found]
    if found and missing:
        raise DatasetNotFoundError(f"downsampled ImageNet {size}x{size} in {data_dir} lacks "
                                   f"{', '.join(missing)} (found {', '.join(found)}); unpack "
                                   f"all parts of Imagenet{size}_train")
    return [found[n] for n in names] if found else []


def _batch_size_ok(path, size):
    """Whether a batch found in data_dir itself (which does not say its size) is of this size.
    Only checks the folder name; the data's shape is checked when read."""
    folder = os.path.basename(os.path.dirname(os.path.abspath(path))).lower()
    return not folder.startswith("imagenet") or folder.startswith(f"imagenet{size}")


def load_batches(files, size):
    """Read and concatenate batch files into (x (N, S, S, 3) uint8, y (N,) int32 0..999)."""
    # Filled in place rather than concatenated, so that loading needs the data's memory once,
    # not twice (64x64 train is 15.7 GB). The files hold little but the images, so their total
    # size bounds the image count from above; compressed .npz files may need the slow path.
    capacity = sum(os.path.getsize(f) for f in files) // (3 * size * size) + 1
    x = np.empty((capacity, size, size, 3), np.uint8)
    ys, n = [], 0
    for path in files:
        xi, yi = _read_batch(path, size)
        if n + len(xi) > len(x):
            x = np.concatenate([x[:n], xi])
        else:
            x[n:n + len(xi)] = xi
        n += len(xi)
        ys.append(yi)
    return x[:n], np.concatenate(ys)


def _read_batch(path, size):
    if path.endswith(".npz"):
        try:
            with np.load(path) as f:
                d = {k: f[k] for k in f.files}
        except Exception as e:   # zipfile, zlib and numpy's own errors alike
            raise CorruptDatasetError(f"{path} is not a readable .npz ({type(e).__name__}: {e}); "
                                      f"it is truncated or corrupt: unpack it again") from e
    else:
        d = loader.load_pickle(path)
    if "data" not in d or "labels" not in d:
        raise CorruptDatasetError(f"{path} is not a downsampled ImageNet batch: it has no "
                                  f"'data' and 'labels' (keys: {sorted(d)})")
    x = loader.planes_to_nhwc(d["data"], size, path)   # a view on the (N, 3*S*S) planes
    y = np.asarray(d["labels"]).astype(np.int32).reshape(-1)
    if len(y) != len(x):
        raise CorruptDatasetError(f"{path} has {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 1000):
        raise CorruptDatasetError(f"{path}: labels should be 1..1000 (one-based, as released); "
                                  f"got {y.min()}..{y.max()}")
    return x, y - 1


# --- van den Oord et al. 2016: folders of PNGs, the original code's form -------------------------

def find_png_folder(data_dir, subset, size):
    """(folder or None, cache path or None) for the subset's PNG folder."""
    name = f"{'train' if subset == 'train' else 'valid'}_{size}x{size}"
    for where in (data_dir, os.path.join(data_dir, "small_imagenet")):
        folder, cache = os.path.join(where, name), os.path.join(where, name + ".npz")
        if os.path.isdir(folder) or os.path.isfile(cache):
            return (folder if os.path.isdir(folder) else None,
                    cache if os.path.isfile(cache) or os.path.isdir(folder) else None)
    return None, None


def load_png_folder(folder, cache, size):
    """All PNGs of the folder, sorted by name, as (N, S, S, 3) uint8, via the .npz cache."""
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png")) if folder else None
    if os.path.isfile(cache):
        try:
            with np.load(cache) as f:
                x = f["x"]
        except Exception as e:
            raise CorruptDatasetError(f"the cache {cache} is unreadable ({type(e).__name__}: "
                                      f"{e}); delete it and run again to rebuild it") from e
        if files is None or len(files) == len(x):
            return x
        print(f"{folder} holds {len(files)} PNGs but the cache {cache} {len(x)}: rebuilding it")
    if not files:
        raise DatasetNotFoundError(f"{folder} holds no .png files")
    x = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        if i % 10000 == 0:
            print(f"reading {folder}: {i:,}/{len(files):,} images")
        path = os.path.join(folder, f)
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise CorruptDatasetError(f"{path} is not a readable PNG ({e})") from e
        if img.shape != (size, size, 3):
            raise CorruptDatasetError(f"{path} is {img.shape[1]}x{img.shape[0]}, expected "
                                      f"{size}x{size}")
        x[i] = img
    part = cache + ".part.npz"
    np.savez(part, x=x)
    os.replace(part, cache)   # a cache is either complete or absent
    print(f"cached {len(x):,} images as {cache}")
    return x


def _not_found_message(data_dir, subset, size):
    zip_name = f"Imagenet{size}_{'train' if subset == 'train' else 'val'}"
    batches = "train_data_batch_1 .. train_data_batch_10" if subset == "train" else "val_data"
    folder = f"{'train' if subset == 'train' else 'valid'}_{size}x{size}"
    return (f"downsampled ImageNet {size}x{size} ({subset}) is not in {data_dir}.\n"
            f"It cannot be downloaded automatically: ImageNet's terms ask each user to sign in "
            f"and accept them. Get {zip_name}.zip (or its _npz variant) from "
            f"https://image-net.org/download-images.php (\"Downsampled ImageNet "
            f"{size}x{size}\") and unzip it into data_dir, so that\n"
            f"    {os.path.join(data_dir, zip_name)}/\n"
            f"holds {batches} (pickles, or the same names with .npz).\n"
            f"The original PixelCNN++ code's unlabelled PNG folders also work: "
            f"{os.path.join(data_dir, folder)}/*.png.")
