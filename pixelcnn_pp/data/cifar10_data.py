"""CIFAR-10 (Krizhevsky 2009), the python-pickle release: 50,000 training and 10,000 test
images, 32x32 RGB, 10 classes. Downloaded (once, with a checksum) if absent.

data_dir may hold any of (searched in this order):
    cifar-10-batches-py/                          the extracted release
    cifar-10-python/cifar-10-batches-py/          the original PixelCNN++ code's layout
    data_batch_1..5, test_batch                   data_dir is the extracted folder itself
    cifar-10-python.tar.gz                        extracted next to itself on first use
    cifar-10-python/cifar-10-python.tar.gz        likewise
and otherwise the tarball is downloaded into data_dir and extracted there.
"""

import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import PurePosixPath

import numpy as np

from pixelcnn_pp.data import loader
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError

# PIXELCNN_CIFAR10_URL overrides where the tarball is fetched from (a mirror; the tests point
# it at a closed local port to be sure they never download).
URL = os.environ.get("PIXELCNN_CIFAR10_URL",
                     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
FILENAME = "cifar-10-python.tar.gz"
SIZE = 170_498_071
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


class DataLoader(loader.DataLoader):
    """CIFAR-10 batches: (batch_size, 32, 32, 3) uint8, labels 0..9."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False):
        x, y = load(data_dir, subset)
        super().__init__(x, y, batch_size, rng, shuffle, return_labels, num_labels=10)


def load(data_dir, subset="train"):
    """(x (N, 32, 32, 3) uint8, y (N,) int32) for subset 'train' (N = 50,000) or 'test'."""
    loader.check_subset(subset)
    folder = maybe_download_and_extract(data_dir)
    xs, ys = [], []
    for name in TRAIN_BATCHES if subset == "train" else TEST_BATCHES:
        path = os.path.join(folder, name)
        try:
            d = loader.load_pickle(path)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"{path} is missing from the extracted CIFAR-10 folder "
                                       f"{folder}; delete that folder to extract or download "
                                       f"it again") from None
        if "data" not in d or "labels" not in d:
            raise CorruptDatasetError(f"{path} is not a CIFAR-10 batch: it has no 'data' and "
                                      f"'labels' (keys: {sorted(d)})")
        xs.append(loader.planes_to_nhwc(d["data"], 32, path))
        ys.append(np.asarray(d["labels"], dtype=np.int32))
        if len(ys[-1]) != len(xs[-1]):
            raise CorruptDatasetError(f"{path} has {len(xs[-1])} images but {len(ys[-1])} labels")
    return np.concatenate(xs), np.concatenate(ys)


def maybe_download_and_extract(data_dir):
    """The path of the `cifar-10-batches-py` folder, extracting or downloading it if needed."""
    nested = os.path.join(data_dir, "cifar-10-python")   # the original code's layout
    for folder in (os.path.join(data_dir, FOLDER), os.path.join(nested, FOLDER), data_dir):
        if os.path.isfile(os.path.join(folder, TRAIN_BATCHES[0])) or \
                os.path.isfile(os.path.join(folder, TEST_BATCHES[0])):
            return folder
    for where in (data_dir, nested):
        if os.path.isfile(os.path.join(where, FILENAME)):
            return extract(os.path.join(where, FILENAME), where)

    tarball = os.path.join(data_dir, FILENAME)
    os.makedirs(data_dir, exist_ok=True)
    try:
        loader.download(URL, tarball, SIZE, MD5)
    except loader.NETWORK_ERRORS as e:
        if isinstance(e, CorruptDatasetError):
            raise
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise DatasetNotFoundError(
            f"CIFAR-10 is not in {data_dir} (looked for {FOLDER}/, cifar-10-python/{FOLDER}/, "
            f"data_batch_1..5 and {FILENAME}) and could not be downloaded from {URL} "
            f"({reason}). Put {FILENAME} ({SIZE:,} bytes, md5 {MD5}, from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html) at {tarball}, or pass --data_dir "
            f"pointing at the folder that holds it or its extracted {FOLDER}/") from e
    return extract(tarball, data_dir)


def extract(tarball, where):
    """Verify the tarball's size and md5, extract `cifar-10-batches-py/` from it into `where`
    safely (regular files and folders inside the archive only), return that folder's path."""
    loader.check_file(tarball, SIZE, MD5, fix=f"delete it and run again to download it, or "
                                             f"get it from {URL}")
    print(f"Extracting {tarball}")
    tmp = tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=where)
    try:
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m, tarball)
                if hasattr(tarfile, "data_filter"):   # Python >= 3.11.4, 3.12
                    tar.extractall(tmp, members=members, filter="data")
                else:
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            if isinstance(e, CorruptDatasetError):
                raise
            raise CorruptDatasetError(f"{tarball} could not be extracted ({type(e).__name__}: "
                                      f"{e}); it is truncated or corrupt: delete it and run "
                                      f"again to download it") from e
        if not os.path.isdir(os.path.join(tmp, FOLDER)):
            raise CorruptDatasetError(f"{tarball} has no {FOLDER}/ folder: it is not the "
                                      f"CIFAR-10 python release")
        # Only a complete extraction gets the real name, so a crash never leaves half a folder.
        os.replace(os.path.join(tmp, FOLDER), os.path.join(where, FOLDER))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(where, FOLDER)


def _check_member(member, tarball):
    """Reject archive members that could write outside the target folder or are not plain
    files and folders (links, devices)."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")) or \
            ":" in member.name or not (member.isfile() or member.isdir()):
        raise CorruptDatasetError(f"{tarball} holds an unsafe member {member.name!r} (absolute "
                                  f"path, '..', or a link or device); refusing to extract it")
