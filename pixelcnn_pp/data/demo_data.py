"""The demo set shipped with the code, so that training runs offline out of the box: 32x32 RGB
crops of six public-domain / CC0 photographs, one class per photograph (data/demo/README.md
lists the sources and licences).

    train: 9,000 images (1,500 per class)     test: 1,050 images (175 per class)

Test crops come from the right-most 30% of each photograph and train crops from the rest, so
no test image shares a pixel with a training image.

Thousands of 32x32 photo crops hardly compress (about 2.4 kB each), so the file holds the six
photographs (shrunk to at most 320 pixels on their short side) and a table of crops (class,
top, left, side, flip), and `render_crops` cuts and area-averages them here on load (about a
second). The arithmetic is exact (integer sums in float64), so every machine gets the
same bytes; a SHA-256 of the result stored at generation time checks it.
"""

import hashlib
import os

import numpy as np

from pixelcnn_pp.data import loader
from pixelcnn_pp.data.loader import CorruptDatasetError

DEMO_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "demo_32x32.npz")
IMAGE_SIZE = 32


class DataLoader(loader.DataLoader):
    """Demo batches: (batch_size, 32, 32, 3) uint8, labels index `self.class_names`.
    data_dir is accepted for the common signature and ignored."""

    def __init__(self, data_dir=None, subset="train", batch_size=16, rng=None, shuffle=False,
                 return_labels=False):
        x, y, self.class_names = load(subset)
        super().__init__(x, y, batch_size, rng, shuffle, return_labels,
                         num_labels=len(self.class_names))


def load(subset="train", path=DEMO_FILE):
    """(x (N, 32, 32, 3) uint8, y (N,) int32, class_names) of the demo set."""
    loader.check_subset(subset)
    try:
        with np.load(path) as f:
            class_names = [str(c) for c in f["class_names"]]
            photos = [f[f"photo_{i}"] for i in range(len(class_names))]
            crops = f[f"{subset}_crops"]
            digest = str(f[f"{subset}_sha256"])
    except Exception as e:   # missing, truncated (BadZipFile), wrong keys: all alike
        raise CorruptDatasetError(f"the demo set {path} is missing or damaged ({e}); reinstall "
                                  f"the package or regenerate it with tools/make_demo_set.py"
                                  ) from e
    x = render_crops(photos, crops)
    if hashlib.sha256(x.tobytes()).hexdigest() != digest:
        raise CorruptDatasetError(f"the demo {subset} images rendered from {path} differ from "
                                  f"those generated: the file is damaged")
    return x, crops[:, 0].astype(np.int32), class_names


def render_crops(photos, crops, size=IMAGE_SIZE):
    """Cut and shrink crops: photos, a list of (H, W, 3) uint8; crops (N, 5) int rows
    (class, top, left, side, flip). Returns (N, size, size, 3) uint8: each output pixel is the
    exact average of the side/size x side/size square of photo it covers (partial pixels
    weighted by area), rounded half up; flip=1 mirrors left-right."""
    crops = np.asarray(crops, np.int64)
    out = np.empty((len(crops), size, size, 3), np.uint8)
    for side in np.unique(crops[:, 3]):
        w = area_weights(side, size)                                     # (size, side)
        rows = np.flatnonzero(crops[:, 3] == side)
        patches = np.stack([photos[c][t:t + side, l:l + side] for c, t, l, _, _ in crops[rows]])
        # Integer weights times uint8 values: every sum is an integer far below 2**53, so the
        # float64 products are exact whatever the BLAS summation order.
        p = patches.astype(np.float64).reshape(len(rows), side, side * 3)
        p = (w @ p).reshape(len(rows), size, side, 3)                     # shrink rows
        p = (p.transpose(0, 1, 3, 2) @ w.T).transpose(0, 1, 3, 2)         # shrink columns
        num = p.astype(np.int64)                                          # exact integers
        out[rows] = (2 * num + side * side) // (2 * side * side)          # / side**2, round half up
    flip = crops[:, 4].astype(bool)
    out[flip] = out[flip, :, ::-1]
    return out


def area_weights(n_in, n_out):
    """(n_out, n_in) integer weights for area-averaging a length n_in to n_out:
    n_out * (the overlap, in input pixels, of output cell i with input pixel j). Each row sums
    to n_in, so a weighted sum divided by n_in is the cell's average."""
    # In units of 1/n_out pixel, output cell i spans [i*n_in, (i+1)*n_in) and input pixel j
    # spans [j*n_out, (j+1)*n_out).
    i = np.arange(n_out)[:, None]
    j = np.arange(n_in)[None, :]
    lo = np.maximum(i * n_in, j * n_out)
    hi = np.minimum((i + 1) * n_in, (j + 1) * n_out)
    return np.maximum(hi - lo, 0).astype(np.float64)
