"""Image completion from files: what ``sample.py --complete FILE --given_rows K`` does.

    images = load_images("faces.npz", image_shape=(32, 32, 3))     # uint8 (N, H, W, C)
    completions, labels = complete_to_files(model, "completions.png", "faces.npz",
                                            num_samples=4, batch_size=16,
                                            image_shape=(32, 32, 3), given_rows=16)

The drawing itself is ``pixelcnn_pp.sampling.complete``: the first ``given_rows`` rows of
every image are kept exactly, the rest drawn from the model given them. Images are never
resized: they must already have the model's H, W, C.

The grid has one row per image: the original, the kept part (the given rows, the rest
mid-grey, 8-bit value 128), then its completions; 1-pixel white borders, as sample.py's tile.
"""

import os

import imageio.v2 as imageio
import numpy as np

from pixelcnn_pp import plotting, sampling
from pixelcnn_pp.batches import batch_seed, run_in_batches, sample_labels
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["IMAGE_EXTENSIONS", "FILL", "load_images", "to_model_range", "kept_part",
           "completion_grid", "complete_to_files"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
FILL = 128            # the 8-bit value shown where a pixel is to be drawn (mid-grey)
MAX_GRID_ROWS = 100   # images drawn in the grid (the .npz holds all of them)


# ---------------------------------------------------------------------------- loading
def load_images(path, image_shape):
    """The uint8 images (N, H, W, C) in ``path``: an .npz (its ``images`` array, or its only
    array), one image file (.png, .jpg, .jpeg, .bmp) or a folder of them (sorted by name).

    Every image must have ``image_shape`` (H, W, C) already (they are not resized); a
    grayscale file or an (N, H, W) array counts as C = 1.
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"images to complete: {path!r} does not exist")
    if os.path.isdir(path):
        images = _load_folder(path, image_shape)
    elif path.lower().endswith(".npz"):
        images = _load_npz(path, image_shape)
    elif path.lower().endswith(IMAGE_EXTENSIONS):
        images = _check_shape(_read_image(path)[None], image_shape, path)
    else:
        raise InvalidInputError(f"images to complete: {path!r} is neither an .npz, an image file "
                                f"({', '.join(IMAGE_EXTENSIONS)}) nor a folder of them")
    return images


def _read_image(path):
    """One image file as uint8 (H, W, C)."""
    try:
        x = np.asarray(imageio.imread(path))
    except (OSError, ValueError, RuntimeError) as e:    # imageio's kinds of unreadable
        raise InvalidInputError(f"cannot read the image {path!r}: {e}") from e
    if x.dtype != np.uint8:
        raise InvalidInputError(f"{path!r} is not an 8-bit image (dtype {x.dtype})")
    return x[..., None] if x.ndim == 2 else x


def _load_folder(path, image_shape):
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise InvalidInputError(f"images to complete: the folder {path!r} holds no image files "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
    files = [os.path.join(path, n) for n in names]
    return np.stack([_check_shape(_read_image(f)[None], image_shape, f)[0] for f in files])


def _load_npz(path, image_shape):
    with np.load(path) as data:
        keys = list(data.files)
        if "images" in keys:
            x = data["images"]
        elif len(keys) == 1:
            x = data[keys[0]]
        else:
            raise InvalidInputError(f"{path!r} holds arrays {keys}: name the images 'images' (or "
                                    "keep only them)")
    if x.dtype != np.uint8:
        raise InvalidInputError(f"{path!r}: the images must be uint8 (8-bit values); got {x.dtype}")
    if x.ndim == 3:                 # (N, H, W): grayscale
        x = x[..., None]
    if x.ndim != 4 or len(x) == 0:
        raise InvalidInputError(f"{path!r}: expected images (N, H, W, C) with N >= 1; got shape "
                                f"{x.shape}")
    return _check_shape(x, image_shape, path)


def _check_shape(images, image_shape, source):
    H, W, C = (int(s) for s in image_shape)
    if images.shape[1:] != (H, W, C):
        h, w, c = images.shape[1:]
        raise InvalidInputError(f"{source!r} has images of {h}x{w}x{c} (HxWxC); the model takes "
                                f"{H}x{W}x{C}: resize or crop them to that first (completion does "
                                f"not resize)")
    return images


def to_model_range(images):
    """uint8 -> float32 in [-1, 1] as the data are scaled, (v - 127.5) / 127.5."""
    return ((np.asarray(images, np.float32) - 127.5) / 127.5).astype(np.float32)


# ---------------------------------------------------------------------------- the grid
def kept_part(images, num_given, fill=FILL):
    """uint8 images (N, H, W, C) with the pixels from raster position num_given on set to
    ``fill``: what the model is given."""
    images = np.array(images, np.uint8)
    N, H, W, C = images.shape
    flat = images.reshape(N, H * W, C)
    flat[:, num_given:] = fill
    return flat.reshape(N, H, W, C)


def completion_grid(originals, completions, num_given, fill=FILL):
    """uint8 grid: row n is originals[n], kept_part(originals[n]), then completions[n, :].

    originals (N, H, W, C), completions (N, S, H, W, C), both uint8. Returns the tile
    (N·(H+1) - 1, (S+2)·(W+1) - 1, C) with 1-pixel white borders.
    """
    originals, completions = np.asarray(originals), np.asarray(completions)
    N, S = completions.shape[:2]
    rows = np.concatenate([originals[:, None], kept_part(originals, num_given, fill)[:, None],
                           completions], axis=1)                    # (N, S + 2, H, W, C)
    return plotting.img_tile(rows.reshape((N * (S + 2),) + rows.shape[2:]),
                             tile_shape=(N, S + 2), border=1, border_color=255)


# ---------------------------------------------------------------------------- sample.py
def complete_to_files(model, out, source, num_samples, batch_size, image_shape,
                      given_rows=None, labels=None, seed=0, method="fast", jit_compile=None,
                      progress=None):
    """Complete every image of ``source`` ``num_samples`` times and write the results.

    source: a path for ``load_images`` (its images must have ``image_shape``). given_rows:
    the top rows kept (default: half of them, H // 2). The N · num_samples completions are
    drawn in batches of ``batch_size`` (completion s of image n is number n · num_samples +
    s; the last batch is filled up and cut), batch b with ``batches.batch_seed(seed, b)``,
    as sample.py's samples. labels: as ``batches.sample_labels``, one per image (all its
    completions share it).

    Writes ``out`` (a PNG grid, ``completion_grid`` of the first 100 images) and ``out``
    with .npz: ``images`` (N · num_samples, H, W, C) uint8, the completions; ``originals``
    (N, H, W, C); ``num_given`` (pixels kept: given_rows · W); ``seed``; ``labels``
    (N · num_samples,) for a conditional model. Existing files are overwritten, as
    sample.py's. Returns (completions uint8 (N, num_samples, H, W, C), labels per image or
    None).
    """
    from pixelcnn_pp.model import PixelCNNPP
    if not isinstance(model, PixelCNNPP):
        raise InvalidInputError("completion draws from a PixelCNN++ model; the PixelCNN "
                                "baseline does not complete images")
    if num_samples < 1 or batch_size < 1:
        raise InvalidInputError(f"num_samples (completions per image) and batch_size must be "
                                f">= 1; got {num_samples}, {batch_size}")
    if not str(out).lower().endswith(".png"):
        raise InvalidInputError(f"--out must name a .png file (the .npz goes beside it); got "
                                f"{out!r}")
    H, W, C = (int(s) for s in image_shape)
    given_rows = H // 2 if given_rows is None else given_rows
    if not 0 <= given_rows <= H:
        raise InvalidInputError(f"given_rows must be between 0 and the image height {H}; got "
                                f"{given_rows}")
    originals = load_images(source, (H, W, C))
    N, S = len(originals), int(num_samples)
    y = sample_labels(labels, N, model.num_classes)
    completions = _complete_in_batches(model, originals, S, batch_size, given_rows * W, y,
                                       seed, method, jit_compile, progress)
    _write(out, originals, completions, given_rows * W, y, seed)
    return completions, y


def _complete_in_batches(model, originals, num_samples, batch_size, num_given, y, seed,
                         method, jit_compile, progress):
    """uint8 completions (N, num_samples, H, W, C): the N · num_samples completions in
    batches (``batches.run_in_batches``), batch b seeded with batch_seed(seed, b)."""
    N, H = len(originals), originals.shape[1]
    source = np.repeat(np.arange(N), num_samples)          # the image of every completion

    def draw(idx, b, report):
        image = source[idx]
        h = None if y is None else np.eye(model.num_classes, dtype=np.float32)[y[image]]
        return sampling.complete(model, to_model_range(originals[image]), num_given, h=h,
                                 seed=batch_seed(seed, b), method=method,
                                 jit_compile=jit_compile, progress=report)

    x = run_in_batches(draw, len(source), batch_size, progress, steps_per_batch=H)
    return plotting.images_to_uint8(x).reshape((N, num_samples) + originals.shape[1:])


def _write(out, originals, completions, num_given, y, seed):
    """The grid PNG and the .npz beside it (see complete_to_files)."""
    N, S = completions.shape[:2]
    rows = min(N, MAX_GRID_ROWS)
    tile = completion_grid(originals[:rows], completions[:rows], num_given)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    imageio.imwrite(out, tile[..., 0] if tile.shape[-1] == 1 else tile)
    arrays = {"images": completions.reshape((N * S,) + completions.shape[2:]),
              "originals": originals, "num_given": np.int64(num_given),
              "seed": np.int64(seed)}
    if y is not None:
        arrays["labels"] = np.repeat(y, S)
    np.savez(str(out)[:-4] + ".npz", **arrays)
