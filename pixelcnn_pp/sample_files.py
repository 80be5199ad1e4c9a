"""What sample.py writes: batches of samples with their seeds and labels, as a PNG grid and
an .npz (``sample_to_files``); the completion grid is ``completion.complete_to_files``."""

import numpy as np
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["sample_labels", "batch_seed", "sample_to_files"]


def sample_labels(labels, num_samples, num_classes):
    """The class of every image: (num_samples,) int, or None for an unconditional model.

    labels: None or "cycle" (image n gets class n mod K, as the original), or a list of class
    indices, repeated to num_samples (one label gives every image that class).
    """
    if not num_classes:
        if labels is not None and labels != "cycle":
            raise InvalidInputError("this model is unconditional: it takes no --labels")
        return None
    if labels is None or labels == "cycle":
        return np.arange(num_samples) % num_classes
    labels = np.asarray([int(l) for l in labels])
    if labels.size == 0:
        raise InvalidInputError("--labels is empty: give class indices, or 'cycle'")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise InvalidInputError(f"labels {sorted(set(bad.tolist()))} out of range: this model has "
                         f"{num_classes} classes (0 .. {num_classes - 1})")
    return np.resize(labels, num_samples)


def batch_seed(seed, b):
    """The seed of batch b of a run: ``seed`` itself for the first batch (so one batch equals
    sample(..., seed=seed)), then seeds derived from (seed, b)."""
    if b == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, b]).generate_state(2, np.uint32)
               .astype(np.uint64).dot([1, 2**32]) % 2**63)


def sample_to_files(model, out, num_samples, batch_size, image_shape, labels=None, seed=0,
                    method="fast", jit_compile=None, progress=None):
    """Draw ``num_samples`` images in batches and write them: what sample.py does.

    Writes ``out`` (a PNG grid of the first 100 images, thin white borders, as the original's
    tile) and ``out`` with .npz (``images`` (N, H, W, C) uint8, ``labels`` (N,) when
    conditional, ``seed``). labels: as ``sample_labels``. progress(rows_done, rows_total) is
    called after every image row. Returns (images uint8, labels or None).
    """
    from pixelcnn_pp import plotting
    if num_samples < 1 or batch_size < 1:
        raise InvalidInputError(f"num_samples and batch_size must be >= 1; got {num_samples}, "
                         f"{batch_size}")
    if not str(out).lower().endswith(".png"):
        raise InvalidInputError(f"--out must name a .png file (the .npz goes beside it); got {out!r}")
    num_classes = getattr(model, "num_classes", None)
    y = sample_labels(labels, num_samples, num_classes)
    H = int(image_shape[0])
    batches = -(-num_samples // batch_size)
    chunks = []
    for b in range(batches):
        h = None
        if y is not None:   # the last batch is padded to batch_size with the first labels
            yb = np.resize(y[b * batch_size:(b + 1) * batch_size], batch_size)
            h = np.eye(num_classes, dtype=np.float32)[yb]
        report = None if progress is None else (
            lambda r, _, b=b: progress(b * H + r, batches * H))
        chunks.append(np.asarray(model.sample_images(
            batch_size, image_shape, h=h, seed=batch_seed(seed, b), method=method,
            jit_compile=jit_compile, progress=report)))
    images = plotting.images_to_uint8(np.concatenate(chunks)[:num_samples])
    plotting.save_tile(out, images, max_images=100)
    arrays = {"images": images, "seed": np.int64(seed)}
    if y is not None:
        arrays["labels"] = y
    np.savez(str(out)[:-4] + ".npz", **arrays)
    return images, y
