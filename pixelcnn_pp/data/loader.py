"""The DataLoader contract of the original PixelCNN++ code, and the helpers its loaders share.

A data set is a class with this constructor and iteration:

    loader = SomeDataLoader(data_dir, subset, batch_size, rng=None, shuffle=False,
                            return_labels=False)
    for x in loader:          # x: (batch_size, H, W, C) uint8; (x, y) with return_labels=True
        ...

Every loader here subclasses `DataLoader` below: it reads its files into `data` (N, H, W, C)
uint8 and `labels` (N,) int32 (or None) and hands them to `DataLoader.__init__`, which does
the iteration. Copy that pattern for a new data set (docs/DATA.md walks through it).
"""

import hashlib
import http.client
import os
import pickle
import sys
import urllib.request

import numpy as np
from pixelcnn_pp.errors import InvalidInputError, UserError


class DataLoader:
    """Iterates over in-memory images in batches, as the original's loaders do.

    One pass of `for x in loader` is one epoch: it yields `len(loader)` batches of exactly
    `batch_size` images (the last partial batch is dropped), then resets. With shuffle=True the
    order is permuted with `rng` at the start of every epoch; like the original, each epoch
    permutes the previous epoch's order (rather than the file order), so a run fed the same
    RandomState visits the images in the original's order.
    """

    def __init__(self, data, labels, batch_size, rng=None, shuffle=False, return_labels=False,
                 num_labels=None, spatial=None, return_spatial=False, num_categories=None):
        """data: (N, H, W, C) uint8 images, or with ``num_categories`` K, (N, H, W) integer
        codes in [0, K). labels: (N,) ints in [0, num_labels), or None. num_labels: defaults
        to max(labels) + 1 (None without labels). spatial: (N, Hs, Ws, D) float maps to
        condition on, or None. rng: a numpy RandomState, used only when shuffling;
        RandomState(1) if None."""
        data = np.asarray(data)
        if num_categories is None:
            if data.dtype != np.uint8 or data.ndim != 4:
                raise InvalidInputError(f"data must be (N, H, W, C) uint8; got {data.dtype} "
                                        f"{data.shape}")
        else:
            data = check_codes(data, num_categories, "codes")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int32)
            if labels.shape != (len(data),):
                raise InvalidInputError(f"labels must be ({len(data)},); got {labels.shape}")
            if num_labels is None:
                num_labels = int(labels.max()) + 1 if len(labels) else 0
        if return_labels and labels is None:
            raise InvalidInputError("return_labels=True, but this data set has no labels")
        if spatial is not None:
            spatial = np.asarray(spatial, dtype=np.float32)
            if spatial.ndim != 4 or len(spatial) != len(data):
                raise InvalidInputError(f"spatial maps must be ({len(data)}, Hs, Ws, D); got "
                                        f"{spatial.shape}")
        if return_spatial and spatial is None:
            raise InvalidInputError("return_spatial=True, but this data set has no spatial "
                                    "maps")
        if len(data) == 0:
            raise EmptySplitError("this split of the data set holds no images")
        if not 0 < batch_size <= len(data):
            raise InvalidInputError(f"batch_size {batch_size} does not fit a data set of "
                                    f"{len(data)} images: no full batch could be made")
        self.data = data
        self.labels = labels
        self.num_labels = num_labels
        self.spatial = spatial
        self.num_categories = num_categories
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.return_labels = return_labels
        self.return_spatial = return_spatial
        self.rng = np.random.RandomState(1) if rng is None else rng
        self.order = np.arange(len(data))   # this epoch's order: batch i is order[p:p + batch_size]
        self.p = 0                          # where the next batch starts in `order`

    def get_observation_size(self):
        """(H, W, C) of one image; (H, W) of one code map."""
        return self.data.shape[1:]

    def get_spatial_shape(self):
        """(Hs, Ws, D) of one spatial map, or None."""
        return None if self.spatial is None else self.spatial.shape[1:]

    def get_num_categories(self):
        """K for a data set of codes in [0, K); None for images."""
        return self.num_categories

    def get_num_labels(self):
        """Number of classes, or None for an unlabelled data set."""
        return self.num_labels

    def __len__(self):
        """Batches per epoch."""
        return len(self.data) // self.batch_size

    def reset(self):
        """Start a new epoch at the next batch (which reshuffles when shuffle=True)."""
        self.p = 0

    def __iter__(self):
        return self

    def __next__(self, n=None):
        """The next batch of n (default batch_size) images: x; (x, y) with return_labels;
        (x, s) with return_spatial; (x, y, s) with both."""
        n = self.batch_size if n is None else n
        if self.p == 0 and self.shuffle:
            self.order = self.order[self.rng.permutation(len(self.order))]
        if self.p + n > len(self.order):
            self.reset()
            raise StopIteration
        idx = self.order[self.p:self.p + n]
        self.p += self.batch_size   # as the original's loaders: batch_size, whatever n is
        x = self.data[idx]                          # (n, H, W, C) uint8 or (n, H, W) codes
        if not (self.return_labels or self.return_spatial):
            return x
        return ((x,) + ((self.labels[idx],) if self.return_labels else ())
                + ((self.spatial[idx],) if self.return_spatial else ()))

    # The original's train.py takes its init batch with loader.next(init_batch_size) and then
    # trains on, without rewinding: epoch 0 starts at position batch_size of the first order.
    next = __next__

    def get_state(self):
        """Where the iteration stands: a dict of numpy arrays (np.savez-able, checkpointable).

        order (N,) int64: this epoch's order; position: index of the next batch's first image
        in `order`; rng_*: the RandomState's state. set_state(get_state()) later, on a loader of
        the same data, makes it yield exactly the batches this one would have yielded next.
        """
        _, keys, pos, has_gauss, cached_gaussian = self.rng.get_state()
        return {"order": self.order.astype(np.int64), "position": np.int64(self.p),
                "rng_keys": np.array(keys, np.uint32), "rng_pos": np.int64(pos),
                "rng_has_gauss": np.int64(has_gauss),
                "rng_cached_gaussian": np.float64(cached_gaussian)}

    def set_state(self, state):
        """Restore what get_state() returned. The RandomState object `rng` is set in place, so
        anything else sharing it sees the restored state too."""
        order = np.asarray(state["order"], dtype=np.int64)
        position = int(state["position"])
        if order.shape != (len(self.data),) or not np.array_equal(np.sort(order),
                                                                  np.arange(len(self.data))):
            raise InvalidInputError(f"the saved data order is not a permutation of this data set's "
                                    f"{len(self.data)} images: it was saved for other data")
        if not 0 <= position <= len(order):
            raise InvalidInputError(f"saved position {position} is outside 0..{len(order)}")
        self.rng.set_state(("MT19937", np.asarray(state["rng_keys"], np.uint32),
                            int(state["rng_pos"]), int(state["rng_has_gauss"]),
                            float(state["rng_cached_gaussian"])))
        self.order = order
        self.p = position


class EmptySplitError(InvalidInputError):
    """The split asked for holds no images (e.g. the test split of a folder class with fewer
    than 10 images)."""


def check_codes(codes, num_categories, name):
    """``codes`` as (N, H, W) int32 in [0, num_categories); InvalidInputError naming ``name``
    and what is wrong otherwise."""
    codes = np.asarray(codes)
    if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
        raise InvalidInputError(f"{name} must be (N, H, W) integer codes; got {codes.dtype} "
                                f"{codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= num_categories):
        bad = codes.min() if codes.min() < 0 else codes.max()
        raise InvalidInputError(f"{name} holds the code {bad}, outside [0, {num_categories}) "
                                f"(num_categories {num_categories})")
    return codes.astype(np.int32)


def check_subset(subset):
    if subset not in ("train", "test"):
        raise InvalidInputError(f"subset must be 'train' or 'test'; got {subset!r}")


# ------------------------------------------------------------------------------------------
# Errors a user can cause. Both are OSErrors, so `except OSError` catches any data file problem.

class DatasetNotFoundError(UserError, FileNotFoundError):
    """The data set's files are not there and cannot be downloaded (offline, or a data set
    whose terms forbid automatic download). The message names the files, where to get them
    and where to put them."""


class CorruptDatasetError(UserError, OSError):
    """A data file is there but truncated, corrupt, unsafe or not in the expected format.
    The message names the file and what to do (usually: delete it and fetch it again)."""


# ------------------------------------------------------------------------------------------
# Helpers for the loaders that fetch and read files.

def md5_of(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_file(path, size=None, md5=None, fix="delete it and run again to fetch it afresh"):
    """Raise CorruptDatasetError unless the file at path has this size (bytes) and md5."""
    actual = os.path.getsize(path)
    if size is not None and actual != size:
        raise CorruptDatasetError(f"{path} is {actual:,} bytes, expected {size:,}: it is "
                                  f"truncated or not the right file; {fix}")
    if md5 is not None and md5_of(path) != md5:
        raise CorruptDatasetError(f"{path} has the wrong md5 checksum (expected {md5}): it is "
                                  f"corrupt or not the right file; {fix}")


def download(url, path, size=None, md5=None):
    """Fetch url to path, printing a progress bar. The file appears at path only once its size
    and md5 match; a failed or interrupted download leaves nothing behind.

    Raises OSError or http.client.HTTPException when the network fails (urllib's URLError is an
    OSError); CorruptDatasetError when the bytes received are not the expected file."""
    part = path + ".part"
    name = os.path.basename(path)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or size or 0)
            done = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                done += len(block)
                _progress(name, done, total)
        sys.stdout.write("\n")
        check_file(part, size, md5, fix=f"the download from {url} was damaged: run again")
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.remove(part)
    print(f"Downloaded {name} ({os.path.getsize(path):,} bytes, checksum verified).")


def _progress(name, done, total, width=30):
    if total:
        filled = min(width, width * done // total)
        bar = "#" * filled + "-" * (width - filled)
        line = f"\r>> Downloading {name} [{bar}] {100 * done / total:5.1f}% of {total / 1e6:.1f} MB"
    else:
        line = f"\r>> Downloading {name} {done / 1e6:.1f} MB"
    sys.stdout.write(line)
    sys.stdout.flush()


NETWORK_ERRORS = (OSError, http.client.HTTPException)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, and nothing else: a pickle
    can run arbitrary code, and a data file has no reason to."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("builtins", "bytearray"),
               ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle(path):
    """A data batch pickled by Python 2 or 3 (latin1 strings, as the CIFAR and downsampled
    ImageNet releases need), as a dict with str keys. Raises CorruptDatasetError on anything
    that is not such a pickle."""
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as e:   # a damaged pickle can fail in almost any way: report them all alike
        raise CorruptDatasetError(f"{path} is not a readable data batch pickle ({type(e).__name__}"
                                  f": {e}); it is truncated or corrupt: delete it and fetch it "
                                  f"again") from e
    if not isinstance(d, dict):
        raise CorruptDatasetError(f"{path} holds a {type(d).__name__}, not a dict of arrays")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def planes_to_nhwc(flat, size, path):
    """(N, 3*S*S) uint8 rows holding R, G, B planes -> (N, S, S, 3)."""
    flat = np.asarray(flat)
    if flat.dtype != np.uint8 or flat.ndim != 2 or flat.shape[1] != 3 * size * size:
        raise CorruptDatasetError(f"{path}: 'data' should be (N, {3 * size * size}) uint8 "
                                  f"(R, G, B planes of {size}x{size}); got {flat.dtype} "
                                  f"{flat.shape}")
    return flat.reshape(-1, 3, size, size).transpose(0, 2, 3, 1)
