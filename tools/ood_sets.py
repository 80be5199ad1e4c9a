"""Out-of-distribution test sets for score.py, written as .npz files, and the DataLoader that
reads them back (docs/SCORING.md).

    # the demo test set flipped upside down, and uniform noise images of the same size
    python tools/ood_sets.py --data_set demo --transform vflip --out ood/demo_vflip.npz
    python tools/ood_sets.py --data_set demo --transform noise --out ood/noise.npz
    # score one against the model (run from the repository's root, so `tools` imports)
    python score.py --save_dir runs/demo --ood_data_set tools.ood_sets:DataLoader \\
        --ood_data_dir ood/demo_vflip.npz --out vflip.csv

The .npz holds ``x`` (N, H, W, C) uint8 and, when the source has labels, ``y`` (N,) int32.
The DataLoader serves the same images for --subset / --ood_subset test and train.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pixelcnn_pp.data import loader  # noqa: E402
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError  # noqa: E402

TRANSFORMS = ("vflip", "hflip", "noise", "constant")


class DataLoader(loader.DataLoader):
    """The images of an .npz written by this tool (data_dir: the .npz's path)."""

    def __init__(self, data_dir, subset, batch_size, rng=None, shuffle=False,
                 return_labels=False):
        loader.check_subset(subset)
        if not os.path.isfile(data_dir):
            raise DatasetNotFoundError(f"{data_dir} is not a file: give the .npz written by "
                                       "tools/ood_sets.py as the data_dir")
        try:
            with np.load(data_dir) as f:
                x = f["x"]
                y = f["y"] if "y" in f.files else None
        except Exception as e:   # not an npz, truncated, no "x": all alike
            raise CorruptDatasetError(f"{data_dir} is not an .npz with images 'x' ({e})") from e
        super().__init__(x, y, batch_size, rng=rng, shuffle=shuffle,
                         return_labels=return_labels)


def transform(x, kind, seed=0):
    """uint8 images (N, H, W, C) -> the OOD set of that kind: flipped upside down (vflip) or
    left to right (hflip), uniform noise in 0..255 (noise) or one random grey level per image
    (constant), of the same shape."""
    rng = np.random.RandomState(seed)
    if kind == "vflip":
        return x[:, ::-1].copy()
    if kind == "hflip":
        return x[:, :, ::-1].copy()
    if kind == "noise":
        return rng.randint(0, 256, size=x.shape).astype(np.uint8)
    if kind == "constant":
        v = rng.randint(0, 256, size=(len(x), 1, 1, 1))
        return np.broadcast_to(v, x.shape).astype(np.uint8)
    raise ValueError(f"unknown transform {kind!r}: use one of {', '.join(TRANSFORMS)}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_set", default="demo", help="source data set (train.py's names)")
    p.add_argument("--data_dir", default="data_files", help="its location")
    p.add_argument("--subset", default="test", choices=("test", "train"))
    p.add_argument("--transform", required=True, choices=TRANSFORMS)
    p.add_argument("--num_images", type=int, default=None, help="only the first N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=".npz to write")
    a = p.parse_args(argv)
    from pixelcnn_pp.data import make_loader
    src = make_loader(a.data_set, a.data_dir, a.subset, 1)
    x = src.data[:a.num_images] if a.num_images else src.data
    y = src.labels
    out = transform(x, a.transform, a.seed)
    arrays = {"x": out}
    if y is not None and a.transform in ("vflip", "hflip"):
        arrays["y"] = np.asarray(y[:len(x)], np.int32)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    if os.path.exists(a.out):
        sys.exit(f"ood_sets.py: error: {a.out} exists already: choose another --out")
    np.savez(a.out, **arrays)
    print(f"wrote {a.out}: {len(out)} images {'x'.join(map(str, out.shape[1:]))} "
          f"({a.transform} of {a.data_set} {a.subset})")


if __name__ == "__main__":
    main()
