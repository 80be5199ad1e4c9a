"""What sample.py writes: batches of samples with their seeds and labels, as a PNG grid and
an .npz (``sample_to_files``): images, or code maps drawn as colours; the completion grid is
``completion.complete_to_files``."""

import numpy as np

from pixelcnn_pp.batches import batch_seed, run_in_batches, sample_labels
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["sample_to_files"]


def sample_to_files(model, out, num_samples, batch_size, image_shape, labels=None, seed=0,
                    method="fast", jit_compile=None, progress=None, spatial=None,
                    temperature=1.0):
    """Draw ``num_samples`` images in batches and write them: what sample.py does.

    Writes ``out`` (a PNG grid of the first 100 images, thin white borders, as the original's
    tile) and ``out`` with .npz (``images`` (N, H, W, C) uint8, ``labels`` (N,) when
    conditional, ``seed``). For a prior over codes: ``codes`` (N, H, W) int32 in the .npz and
    each code's colour (``plotting.code_colours``) in the PNG. labels: as
    ``batches.sample_labels``. spatial: (N, Hs, Ws, D) maps for a model with a spatial
    condition (map n conditions sample n; written to the .npz as ``spatial``). Batch b is drawn with ``batches.batch_seed(seed,
    b)``. progress(rows_done, rows_total) is called after every image row. Returns (images
    uint8 or codes, labels or None).
    """
    from pixelcnn_pp import plotting
    if num_samples < 1 or batch_size < 1:
        raise InvalidInputError(f"num_samples and batch_size must be >= 1; got {num_samples}, "
                                f"{batch_size}")
    if not str(out).lower().endswith(".png"):
        raise InvalidInputError(f"--out must name a .png file (the .npz goes beside it); got "
                                f"{out!r}")
    num_classes = model.num_classes
    y = sample_labels(labels, num_samples, num_classes)
    onehot = None if y is None else np.eye(num_classes, dtype=np.float32)

    if spatial is not None and len(spatial) != num_samples:
        raise InvalidInputError(f"{len(spatial)} spatial maps for {num_samples} samples: give "
                                "one per sample")
    extra = {} if temperature == 1.0 else {"temperature": temperature}

    def draw(idx, b, report):          # the last batch is filled up with its first labels
        if spatial is not None:
            extra["spatial"] = spatial[idx]
        return model.sample_images(batch_size, image_shape,
                                   h=None if y is None else onehot[y[idx]],
                                   seed=batch_seed(seed, b), method=method,
                                   jit_compile=jit_compile, progress=report, **extra)

    x = run_in_batches(draw, num_samples, batch_size, progress,
                       steps_per_batch=int(image_shape[0]))
    K = model.num_categories
    if K:
        images = np.asarray(x).astype(np.int32)
        plotting.save_tile(out, plotting.codes_to_rgb(images, K), max_images=100)
        arrays = {"codes": images, "seed": np.int64(seed)}
    else:
        images = plotting.images_to_uint8(x)
        plotting.save_tile(out, images, max_images=100)
        arrays = {"images": images, "seed": np.int64(seed)}
    if y is not None:
        arrays["labels"] = y
    if spatial is not None:
        arrays["spatial"] = np.asarray(spatial, np.float32)
    np.savez(str(out)[:-4] + ".npz", **arrays)
    return images, y
