"""Generate the demo set, data/demo/demo_32x32.npz, from photographs that scikit-image ships.

scikit-image is needed here only, not by the project. Either install it or point --source at
its wheel (a .whl is a zip) or at a folder holding its `skimage/data` files:

    pip download scikit-image==0.26.0 --no-deps -d wheels
    python tools/make_demo_set.py --source wheels/scikit_image-0.26.0-*.whl

The output is the same on every machine for the same source files (their md5s are checked
against the ones the shipped set was made from): all arithmetic is exact and the crop table
comes from RandomState(--seed).
"""

import argparse
import hashlib
import io
import os
import sys
import zipfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pixelcnn_pp.data import demo_data  # noqa: E402

# class name: (file in skimage/data, md5 of that file in scikit-image 0.26.0)
SOURCES = {
    "astronaut": ("astronaut.png", "97066e0a8baf4cd0be9859f9825aa3a2"),
    "cat": ("chelsea.png", "0f1b4a59504988622035d850dc0555ac"),
    "coffee": ("coffee.png", "f24210802e8d0690e0c1c2302f907cc4"),
    "galaxies": ("hubble_deep_field.jpg", "bfc42613c8edb720cf7d1343693787a4"),
    "rocket": ("rocket.jpg", "511130d2072cc744a1fa5015bc23557a"),
    "retina": ("retina.jpg", "5fa589edda0ab6832e3afcd92c402412"),
}
SHORT_SIDE = 320        # photographs are shrunk (never enlarged) to this short side
TEST_FRACTION = 0.3     # the right-most 30% of each photograph is reserved for test crops
MIN_SIDE, MAX_SIDE = 32, 96   # crop sides, drawn log-uniformly: 1x to 3x shrinking
TRAIN_PER_CLASS, TEST_PER_CLASS = 1500, 175


def read_sources(source):
    """{class: (H, W, 3) uint8 photograph}, checking each file's md5 where recorded."""
    def read(name):
        if source is None:
            import skimage.data
            with open(os.path.join(os.path.dirname(skimage.data.__file__), name), "rb") as f:
                return f.read()
        if source.endswith(".whl"):
            with zipfile.ZipFile(source) as z:
                return z.read(f"skimage/data/{name}")
        for folder in (source, os.path.join(source, "skimage", "data")):
            if os.path.isfile(os.path.join(folder, name)):
                with open(os.path.join(folder, name), "rb") as f:
                    return f.read()
        raise FileNotFoundError(f"{name} is not in {source}")

    photos = {}
    for cls, (name, md5) in SOURCES.items():
        raw = read(name)
        digest = hashlib.md5(raw).hexdigest()
        print(f"{cls:10s} {name:24s} md5 {digest}")
        if md5 is not None and digest != md5:
            sys.exit(f"{name} has md5 {digest}, not {md5}: a different scikit-image release? "
                     f"The result would differ from the shipped demo set.")
        photos[cls] = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    return photos


def area_resize(img, h, w):
    """(H, W, 3) uint8 -> (h, w, 3) uint8 by exact area averaging, rounded half up."""
    H, W = img.shape[:2]
    wr, wc = demo_data.area_weights(H, h), demo_data.area_weights(W, w)
    num = np.einsum("ih,hwc,jw->ijc", wr, img.astype(np.float64), wc, optimize=True)
    return ((2 * num.astype(np.int64) + H * W) // (2 * H * W)).astype(np.uint8)


def sample_crops(rng, cls, shape, n, test):
    """(n, 5) int16 rows (class, top, left, side, flip) inside the photo's train or test part."""
    H, W = shape[:2]
    boundary = int(round((1 - TEST_FRACTION) * W))   # test crops lie right of it, train left
    rows = []
    for _ in range(n):
        side = int(round(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE)))))
        top = rng.randint(0, H - side + 1)
        left = rng.randint(boundary, W - side + 1) if test else rng.randint(0, boundary - side + 1)
        rows.append((cls, top, left, side, rng.randint(2)))
    return np.array(rows, np.int16)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=None,
                        help="scikit-image wheel (.whl) or folder with its data files; default: "
                             "the installed scikit-image")
    parser.add_argument("--out", default=demo_data.DEMO_FILE)
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args()

    photos = read_sources(args.source)
    rng = np.random.RandomState(args.seed)
    arrays = {"class_names": np.array(list(SOURCES))}
    train, test = [], []
    for c, (cls, img) in enumerate(photos.items()):
        H, W = img.shape[:2]
        scale = min(1.0, SHORT_SIDE / min(H, W))
        small = area_resize(img, round(H * scale), round(W * scale))
        assert (1 - TEST_FRACTION) * small.shape[1] >= MAX_SIDE and \
            TEST_FRACTION * small.shape[1] >= MAX_SIDE - 1
        arrays[f"photo_{c}"] = small
        train.append(sample_crops(rng, c, small.shape, TRAIN_PER_CLASS, test=False))
        test.append(sample_crops(rng, c, small.shape, TEST_PER_CLASS, test=True))
        print(f"  class {c} {cls}: photograph {W}x{H} stored at {small.shape[1]}x{small.shape[0]}")
    photo_list = [arrays[f"photo_{c}"] for c in range(len(SOURCES))]
    for subset, crops in (("train", train), ("test", test)):
        crops = np.concatenate(crops)
        crops = crops[rng.permutation(len(crops))]   # classes interleaved, as in a real set
        arrays[f"{subset}_crops"] = crops
        x = demo_data.render_crops(photo_list, crops)
        arrays[f"{subset}_sha256"] = np.array(hashlib.sha256(x.tobytes()).hexdigest())
        print(f"{subset}: {len(crops)} images, sha256 {arrays[f'{subset}_sha256']}")
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes)")


if __name__ == "__main__":
    main()
