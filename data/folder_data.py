"""Any folder of images (PNG, JPEG, BMP, GIF, WebP; any size) as a data set.

Layouts:
    data_dir/<class>/**/<image>     one class per sub-folder (sorted by name: labels 0, 1, ...)
    data_dir/<image>                no image in a sub-folder: one class
Each image is turned upright (EXIF orientation), composited onto white if it has transparency,
converted to RGB (or grayscale with channels=1), centre-cropped to a square and resized to
image_size x image_size: area-averaged (Pillow's BOX filter) when shrinking, bicubic when
enlarging.

Split: within each class, in file-name order, every 10th image (the 10th, 20th, ...) is in
'test', the rest in 'train'. A class of fewer than 10 images has no test image.

The processed images are cached in data_dir as `pixelcnn_cache_<S>x<S>_<rgb|gray>.npz` and the
cache is reused while the same files (paths, sizes and modification times) are there; if
data_dir is read-only the images are processed on every run.
"""

import os

import numpy as np
from PIL import Image, ImageOps

from data import loader
from data.loader import CorruptDatasetError, DatasetNotFoundError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEST_EVERY = 10


class DataLoader(loader.DataLoader):
    """Batches of (batch_size, image_size, image_size, channels) uint8; labels index
    `self.class_names`."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False, image_size=32, channels=3):
        x, y, self.class_names = load(data_dir, subset, image_size, channels)
        super().__init__(x, y, batch_size, rng, shuffle, return_labels,
                         num_labels=len(self.class_names))


def load(data_dir, subset="train", image_size=32, channels=3):
    """(x (N, S, S, channels) uint8, y (N,) int32, class_names) for 'train' or 'test'."""
    loader.check_subset(subset)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    files, labels, class_names = list_images(data_dir)
    x = _load_all(data_dir, files, image_size, channels)
    is_test = np.zeros(len(files), bool)
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)            # in file-name order
        is_test[members[TEST_EVERY - 1::TEST_EVERY]] = True
    keep = is_test if subset == "test" else ~is_test
    return x[keep], labels[keep], class_names


def list_images(data_dir):
    """(relative paths, labels (N,) int32, class names), sorted by class then path."""
    if not os.path.isdir(data_dir):
        raise DatasetNotFoundError(f"image folder {data_dir} does not exist")
    classes = []
    for name in sorted(os.listdir(data_dir)):
        if os.path.isdir(os.path.join(data_dir, name)) and not name.startswith("."):
            found = sorted(os.path.relpath(os.path.join(root, f), data_dir)
                           for root, _, fs in os.walk(os.path.join(data_dir, name))
                           for f in fs if f.lower().endswith(EXTENSIONS))
            if found:
                classes.append((name, found))
    if not classes:
        top = sorted(f for f in os.listdir(data_dir) if f.lower().endswith(EXTENSIONS)
                     and os.path.isfile(os.path.join(data_dir, f)))
        if not top:
            raise DatasetNotFoundError(f"{data_dir} holds no images ({', '.join(EXTENSIONS)}), "
                                       f"neither directly nor in class sub-folders")
        classes = [(os.path.basename(os.path.abspath(data_dir)), top)]
    files = [f for _, fs in classes for f in fs]
    labels = np.concatenate([np.full(len(fs), c, np.int32) for c, (_, fs) in enumerate(classes)])
    return files, labels, [name for name, _ in classes]


def read_image(path, image_size=32, channels=3):
    """One image file -> (image_size, image_size, channels) uint8, centre-cropped square."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
            im = im.convert("RGB" if channels == 3 else "L")
            w, h = im.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            filt = Image.Resampling.BOX if s >= image_size else Image.Resampling.BICUBIC
            a = np.asarray(im.resize((image_size, image_size), filt, box=box), np.uint8)
    except OSError as e:   # Pillow's UnidentifiedImageError and truncated files are OSErrors
        raise CorruptDatasetError(f"{path} is not a readable image ({e})") from e
    return a[..., None] if channels == 1 else a


def _load_all(data_dir, files, image_size, channels):
    """All images, processed, via the cache."""
    cache = os.path.join(data_dir, f"pixelcnn_cache_{image_size}x{image_size}_"
                                   f"{'rgb' if channels == 3 else 'gray'}.npz")
    stamps = np.array([[st.st_size, st.st_mtime_ns] for st in
                       (os.stat(os.path.join(data_dir, f)) for f in files)], np.int64)
    if os.path.isfile(cache):
        try:
            with np.load(cache) as c:
                if list(c["files"]) == files and np.array_equal(c["stamps"], stamps):
                    return c["x"]
        except Exception:   # an unreadable cache is rebuilt, like a stale one
            pass
        print(f"{cache} is out of date: rebuilding it")
    x = np.empty((len(files), image_size, image_size, channels), np.uint8)
    for i, f in enumerate(files):
        if i % 1000 == 0:
            print(f"reading {data_dir}: {i:,}/{len(files):,} images")
        x[i] = read_image(os.path.join(data_dir, f), image_size, channels)
    try:
        part = cache + ".part.npz"
        np.savez(part, x=x, files=np.array(files), stamps=stamps)
        os.replace(part, cache)   # a cache is either complete or absent
    except OSError as e:
        print(f"could not write the cache {cache} ({e}); images will be read again next time")
    return x
