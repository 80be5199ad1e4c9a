"""MNIST (LeCun et al. 1998): 60,000 training and 10,000 test digits, 28x28 grayscale, 10
classes, in the IDX files of the original release. Downloaded (with md5 checks) if absent.

data_dir (or data_dir/MNIST/raw/, torchvision's layout) holds, gzipped or not:
    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
(`train-images.idx3-ubyte`, with a dot, as some mirrors name them, is accepted too).

pad_to: PixelCNN++ halves the image twice, so H and W must be divisible by 4; 28 is, so MNIST
runs as it is. pad_to=32 pads each side with 2 rows/columns of zeros (MNIST's background value)
to 32x32, for settings that want CIFAR's shape (e.g. the same model and sampling code for both,
or a third downsampling).
"""

import gzip
import os
import zlib

import numpy as np

from pixelcnn_pp.data import loader
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError
from pixelcnn_pp.errors import InvalidInputError

URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"   # a mirror of the original files
FILES = {   # name: (size in bytes, md5) of the gzipped files
    "train-images-idx3-ubyte.gz": (9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": (28_881, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": (1_648_877, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": (4_542, "ec29112dd5afa0611ce80d1b7f02629c"),
}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801   # uint8 data, 3 and 1 dimensions


class DataLoader(loader.DataLoader):
    """MNIST batches: (batch_size, 28, 28, 1) uint8 (pad_to x pad_to with pad_to), labels 0..9."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False, pad_to=None):
        x, y = load(data_dir, subset, pad_to)
        super().__init__(x, y, batch_size, rng, shuffle, return_labels, num_labels=10)


def load(data_dir, subset="train", pad_to=None):
    """(x (N, 28, 28, 1) uint8 or (N, pad_to, pad_to, 1), y (N,) int32 in 0..9)."""
    loader.check_subset(subset)
    prefix = "train" if subset == "train" else "t10k"
    x = read_idx(find_or_fetch(data_dir, f"{prefix}-images-idx3-ubyte.gz"), IMAGES_MAGIC)
    y = read_idx(find_or_fetch(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), LABELS_MAGIC)
    if len(x) != len(y):
        raise CorruptDatasetError(f"MNIST {subset} in {data_dir}: {len(x)} images but "
                                  f"{len(y)} labels")
    if pad_to is not None:
        if pad_to < 28:
            raise InvalidInputError(f"pad_to must be at least 28; got {pad_to}")
        a = (pad_to - 28) // 2
        x = np.pad(x, ((0, 0), (a, pad_to - 28 - a), (a, pad_to - 28 - a)))
    return x[..., None], y.astype(np.int32)


def find_or_fetch(data_dir, name):
    """The path of MNIST file `name` (gzipped or not) in data_dir, downloading it if absent."""
    raw = name[:-3]
    for folder in (data_dir, os.path.join(data_dir, "MNIST", "raw")):
        for candidate in (name, raw, raw.replace("-idx", ".idx")):
            if os.path.isfile(os.path.join(folder, candidate)):
                return os.path.join(folder, candidate)
    path = os.path.join(data_dir, name)
    size, md5 = FILES[name]
    os.makedirs(data_dir, exist_ok=True)
    try:
        loader.download(URL + name, path, size, md5)
    except loader.NETWORK_ERRORS as e:
        if isinstance(e, CorruptDatasetError):
            raise
        raise DatasetNotFoundError(
            f"MNIST's {name} is not in {data_dir} and could not be downloaded ({e}).\n"
            f"Get it ({size:,} bytes, md5 {md5}) from\n    {URL + name}\n(or any MNIST "
            f"mirror) and put it at\n    {path}\n(gzipped or not), with the other three "
            f"files: {', '.join(n for n in FILES if n != name)}.") from e
    return path


def read_idx(path, magic):
    """An IDX file of uint8 (gzipped or not) as an array of the shape its header gives."""
    try:
        with (gzip.open if _is_gzip(path) else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptDatasetError(f"{path} could not be read ({type(e).__name__}: {e}); it is "
                                  f"truncated or corrupt: delete it and fetch it again") from e
    found = hex(int.from_bytes(raw[:4], "big")) if len(raw) >= 4 else "missing"
    if found != hex(magic):
        kind = "image" if magic == IMAGES_MAGIC else "label"
        raise CorruptDatasetError(f"{path} is not an MNIST IDX {kind} file: its magic number is "
                                  f"{found}, expected {hex(magic)}")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise CorruptDatasetError(f"{path} should hold {int(np.prod(shape)):,} bytes of data "
                                  f"for shape {shape}, has {len(body):,}: it is truncated")
    return np.frombuffer(body, np.uint8).reshape(shape).copy()   # writable


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"
