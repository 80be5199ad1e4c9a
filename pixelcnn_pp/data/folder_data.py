"""Any folder of images (PNG, JPEG, BMP, GIF, WebP; any size) as a data set.

Layouts:
    data_dir/<class>/**/<image>     one class per sub-folder (sorted by name: labels 0, 1, ...)
    data_dir/<image>                no image in a sub-folder: one class
Each image is turned upright (EXIF orientation), composited onto white if it has transparency
(RGBA, LA, a palette or grayscale with a transparent colour), 16-bit images scaled to 8 bits
(the high byte), converted to RGB (grayscale repeated in R, G and B; or grayscale with
channels=1), centre-cropped to a square and resized to image_size x image_size: area-averaged
(Pillow's BOX filter) when shrinking, bicubic when enlarging (an image smaller than image_size
is enlarged, not skipped).

A file that cannot be read as an image (truncated, corrupt, not an image despite its name) is
skipped: one warning on stderr counts and names them all (beyond 10 names, the list goes to a
file beside the cache, which the warning names). Files without an image extension are ignored
and counted in that warning. ``strict=True`` (train.py --strict_images) makes unreadable
images an error listing them all instead.

Split: within each class, in file-name order, every 10th image (the 10th, 20th, ...) is in
'test', the rest in 'train'. A class of fewer than 10 images has no test image. The split is
made over every image file listed, skipped ones included, so a broken file moves no other.

The processed images are cached outside data_dir (which may be read-only): in
$PIXELCNN_CACHE_DIR, else $XDG_CACHE_HOME/pixelcnn_pp, else ~/.cache/pixelcnn_pp, as
`folder_<name>_<hash of the folder's path>_<S>x<S>_<rgb|gray>.npz`; it is reused while the
same files (paths, sizes and modification times) are there and rebuilt otherwise. If no cache
can be written, the images are processed on every run.
"""

import hashlib
import os
import sys

import numpy as np
from PIL import Image, ImageOps

from pixelcnn_pp.data import loader
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError
from pixelcnn_pp.errors import InvalidInputError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEST_EVERY = 10


MAX_NAMES = 10   # skipped files named in the warning itself; more go to a file


class DataLoader(loader.DataLoader):
    """Batches of (batch_size, image_size, image_size, channels) uint8; labels index
    `self.class_names`; `self.files` is each image's path, in the order of `self.data`."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False, image_size=32, channels=3, strict=False):
        x, y, self.class_names, rel = load(data_dir, subset, image_size, channels,
                                           strict=strict, return_files=True)
        self.files = [os.path.join(data_dir, f) for f in rel]
        super().__init__(x, y, batch_size, rng, shuffle, return_labels,
                         num_labels=len(self.class_names))


def load(data_dir, subset="train", image_size=32, channels=3, strict=False,
         return_files=False):
    """(x (N, S, S, channels) uint8, y (N,) int32, class_names) for 'train' or 'test'
    (and the images' paths relative to data_dir, with return_files=True).

    Unreadable image files are skipped with one warning (strict=True: CorruptDatasetError
    listing them all)."""
    loader.check_subset(subset)
    if channels not in (1, 3):
        raise InvalidInputError(f"channels must be 1 or 3; got {channels}")
    files, labels, class_names = list_images(data_dir)
    x, ok, reasons, cache = _load_all(data_dir, files, image_size, channels)
    _report_skipped(data_dir, files, ok, reasons, cache, strict)
    is_test = np.zeros(len(files), bool)
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)            # in file-name order
        is_test[members[TEST_EVERY - 1::TEST_EVERY]] = True
    keep = (is_test if subset == "test" else ~is_test)[ok]
    if not ok.any():
        raise CorruptDatasetError(f"none of the {len(files)} image files in {data_dir} could "
                                  f"be read: {_names(files, reasons, ~ok, 3)}")
    kept_files = [f for f, good in zip(files, ok) if good]
    out = (x[keep], labels[ok][keep], class_names)
    return out + ([f for f, k in zip(kept_files, keep) if k],) if return_files else out


def cache_dir():
    """Where processed folders are cached (see the module docstring)."""
    if os.environ.get("PIXELCNN_CACHE_DIR"):
        return os.environ["PIXELCNN_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pixelcnn_pp")


def _names(files, reasons, mask, limit=None):
    idx = np.flatnonzero(mask)
    shown = [f"{files[i]} ({reasons[i]})" for i in idx[:limit]]
    more = len(idx) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


_warned = set()


def _report_skipped(data_dir, files, ok, reasons, cache, strict):
    """One warning (or, strict, one error) naming every unreadable image and counting the
    files that are not images."""
    bad = ~ok
    others = _other_files(data_dir)
    if strict and bad.any():
        raise CorruptDatasetError(
            f"{int(bad.sum())} of the {len(files)} image files in {data_dir} cannot be used "
            f"(strict): {_names(files, reasons, bad)}. Fix or remove them, or drop "
            "--strict_images to skip them")
    key = (os.path.abspath(data_dir), cache, int(bad.sum()), len(others))
    if (not bad.any() and not others) or key in _warned:
        return
    _warned.add(key)
    parts = []
    if bad.any():
        if bad.sum() <= MAX_NAMES:
            listed = _names(files, reasons, bad)
        else:
            listed = _write_list(cache, files, reasons, bad, data_dir)
        parts.append(f"skipped {int(bad.sum())} of {len(files)} image files that cannot be read: "
                     f"{listed}")
    if others:
        shown = ", ".join(others[:MAX_NAMES]) + (f" and {len(others) - MAX_NAMES} more"
                                                  if len(others) > MAX_NAMES else "")
        parts.append(f"ignored {len(others)} file(s) without an image extension "
                     f"({', '.join(EXTENSIONS)}): {shown}")
    sys.stderr.write(f"warning: {data_dir}: " + "; ".join(parts) + "\n")
    sys.stderr.flush()


def _write_list(cache, files, reasons, bad, data_dir):
    """The skipped files, one a line, in a file beside the cache; returns how to name them."""
    path = (cache[:-4] if cache else os.path.join(cache_dir(), "folder")) + ".skipped.txt"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            for i in np.flatnonzero(bad):
                f.write(f"{os.path.join(data_dir, files[i])}\t{reasons[i]}\n")
        return f"the list is in {path} (first: {_names(files, reasons, bad, 3)})"
    except OSError:
        return _names(files, reasons, bad)


def _other_files(data_dir):
    """Files under data_dir (not hidden) without an image extension."""
    out = []
    for root, dirs, fs in os.walk(data_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += sorted(os.path.relpath(os.path.join(root, f), data_dir) for f in fs
                      if not f.startswith(".") and not f.lower().endswith(EXTENSIONS)
                      and not f.startswith("pixelcnn_cache_"))
    return out


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
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):   # 16-bit grayscale
                a16 = np.asarray(im).astype(np.uint32)
                im = Image.fromarray((np.minimum(a16, 65535) >> 8).astype(np.uint8), "L")
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
            im = im.convert("RGB" if channels == 3 else "L")
            w, h = im.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            filt = Image.Resampling.BOX if s >= image_size else Image.Resampling.BICUBIC
            a = np.asarray(im.resize((image_size, image_size), filt, box=box), np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # Pillow's UnidentifiedImageError and truncated files are OSErrors; odd headers can
        # raise the others.
        raise CorruptDatasetError(f"{path} is not a readable image ({e})") from e
    return a[..., None] if channels == 1 else a


def _load_all(data_dir, files, image_size, channels):
    """(x (N, S, S, C) of the readable images, ok (len(files),) bool, reason per file, cache
    path or None), via the cache."""
    folder = os.path.abspath(data_dir)
    tag = hashlib.sha256(folder.encode()).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.path.basename(folder))
    cache = os.path.join(cache_dir(), f"folder_{name}_{tag}_{image_size}x{image_size}_"
                                      f"{'rgb' if channels == 3 else 'gray'}.npz")
    stamps = np.array([[st.st_size, st.st_mtime_ns] for st in
                       (os.stat(os.path.join(data_dir, f)) for f in files)], np.int64)
    if os.path.isfile(cache):
        try:
            with np.load(cache) as c:
                if list(c["files"]) == files and np.array_equal(c["stamps"], stamps) and \
                        str(c["folder"]) == folder:
                    return c["x"], c["ok"], list(c["reasons"]), cache
        except Exception:   # an unreadable cache is rebuilt, like a stale one
            pass
        print(f"{cache} is out of date: rebuilding it")
    x = np.empty((len(files), image_size, image_size, channels), np.uint8)
    ok = np.ones(len(files), bool)
    reasons = [""] * len(files)
    for i, f in enumerate(files):
        if i % 1000 == 0:
            print(f"reading {data_dir}: {i:,}/{len(files):,} images")
        try:
            x[i] = read_image(os.path.join(data_dir, f), image_size, channels)
        except CorruptDatasetError as e:
            ok[i] = False
            cause = e.__cause__ if e.__cause__ is not None else e
            reasons[i] = " ".join(str(cause).split())[:120] or type(cause).__name__
    x = x[ok]
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        part = cache + ".part.npz"
        np.savez(part, x=x, ok=ok, reasons=np.array(reasons), files=np.array(files),
                 stamps=stamps, folder=np.array(folder))
        os.replace(part, cache)   # a cache is either complete or absent
    except OSError as e:
        print(f"could not write the cache {cache} ({e.strerror or e}); images will be read "
              "again next time")
    return x, ok, reasons, cache
