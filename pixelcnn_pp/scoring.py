"""Scores of images under a trained model, for out-of-distribution detection (docs/SCORING.md).

    from pixelcnn_pp import scoring
    s = scoring.score_images(model, images, labels=None, batch_size=16, background=None)
    s["nll_nats"], s["bits_per_dim"]          # (N,) float64; s["llr"] with a background model
    c = scoring.input_complexity(images)      # (N,) bits/dim of a lossless PNG encoding
    a = scoring.auroc(scores_in, scores_out)  # higher score = more "out"

``images`` are uint8 (N, H, W, C), or int code maps (N, H, W) for a prior over codes
(``num_categories``), whose scores are per code (``bits_per_code``); a spatially conditioned
model takes each input's map as ``spatial=`` (N, Hs, Ws, D). Scores use whatever weights the
model holds: load it with ``checkpoint.load_for_inference(save_dir, use_averages=True)`` for
the Polyak averages, as evaluation does. Works for PixelCNN++ (RGB and grayscale, conditional with ``labels``)
and the PixelCNN baseline; an energy-distance model has no likelihood and is refused.

The scores (higher = more likely out of distribution):
    bits_per_dim      -log2 p(x) / (H W C)      (bits_per_code: -log2 p(codes) / (H W))
    llr               bits/dim under a background model minus bits/dim under this one, the
                      likelihood ratio of Ren et al. 2019 per dimension (higher = more "in":
                      use -llr as an out-score)
    ic_score          bits/dim minus input_complexity (Serra et al. 2020)
"""

import weakref

import imageio.v3 as iio
import numpy as np
import tensorflow as tf

from pixelcnn_pp.batches import run_in_batches
from pixelcnn_pp.data.loader import check_codes
from pixelcnn_pp.errors import InvalidInputError
from pixelcnn_pp.likelihood import bits_per_dim, model_inputs

__all__ = ["score_images", "mutate_inputs", "subpixel_nll", "input_complexity", "png_bytes",
           "auroc"]

# model -> its traced scoring functions (what they compute is fixed when the model is built)
_FUNCTIONS = weakref.WeakKeyDictionary()


def _functions(model):
    """{"nll": (x, h, s) -> (B,) nats, "subpixel": (x, h, s) -> (B, H, W, C) or, for codes,
    (B, H, W) log p}, through the interface PixelCNNPP and the PixelCNN baseline share. x:
    uint8 images or int32 codes; h: (B, D) or None; s: spatial maps or None."""
    if getattr(model, "energy_distance", False):
        raise InvalidInputError("an energy-distance model has no likelihood to score images "
                                "with: score with a model trained on the likelihood")
    if model in _FUNCTIONS:
        return _FUNCTIONS[model]

    def out(x, h, s):
        return model(x, h=h, training=False, **({} if s is None else {"spatial": s}))

    @tf.function(autograph=False)
    def nll(x, h, s):
        x = model_inputs(x)
        return model.nll_per_image(x, out(x, h, s))

    @tf.function(autograph=False)
    def subpixel(x, h, s):
        x = model_inputs(x)
        return model.subpixel_log_prob(x, out(x, h, s))

    _FUNCTIONS[model] = {"nll": nll, "subpixel": subpixel}
    return _FUNCTIONS[model]


def _check_inputs(model, images, labels, spatial):
    """(images, labels or None, spatial or None) as the model takes them: uint8 (N, H, W, C)
    images of its channel count, or int codes (N, H, W) in [0, K) for a prior over codes; int
    labels for a class-conditional model; float maps (N, Hs, Ws, D) for a spatially
    conditioned one. Raises InvalidInputError saying what is wrong."""
    images = np.asarray(images)
    K = model.num_categories
    if K:
        images = check_codes(images, K, f"the code maps of this prior over {K} codes")
    elif images.dtype != np.uint8 or images.ndim != 4:
        raise InvalidInputError(f"images must be uint8 (N, H, W, C); got {images.dtype} "
                                f"{images.shape}")
    elif images.shape[-1] != model.num_channels:
        raise InvalidInputError(f"the model takes {model.num_channels}-channel images; these "
                                f"have {images.shape[-1]} channels (shape {images.shape})")
    D = model.spatial_channels
    if D:
        if spatial is None:
            raise InvalidInputError(f"this model is conditioned on spatial maps ({D} channels):"
                                    " it scores p(x | map) and needs each input's map")
        spatial = np.asarray(spatial, np.float32)
        if spatial.ndim != 4 or len(spatial) != len(images) or spatial.shape[-1] != D:
            raise InvalidInputError(f"spatial maps must be ({len(images)}, Hs, Ws, {D}); got "
                                    f"{spatial.shape}")
    else:
        spatial = None
    k = model.num_classes
    if not k:
        return images, None, spatial
    if labels is None:
        raise InvalidInputError(f"this model is class-conditional ({k} classes): it scores p(x | "
                                "label) and needs each image's label")
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (len(images),):
        raise InvalidInputError(f"labels must be ({len(images)},); got {labels.shape}")
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.size:
        raise InvalidInputError(f"labels {sorted(set(bad.tolist()))} out of range: the model "
                                f"has {k} classes (0 .. {k - 1})")
    return images, labels, spatial


def _batched(model, name, images, labels, spatial, batch_size, progress=None):
    """Run the model's function ``name`` over images (or code maps) in batches of batch_size
    (``batches.run_in_batches``: the last one filled up, the extra outputs dropped);
    concatenated numpy output."""
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise InvalidInputError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    images, labels, spatial = _check_inputs(model, images, labels, spatial)
    fn = _functions(model)[name]
    k = model.num_classes
    if not len(images):
        return np.zeros((0,) + images.shape[1:] if name == "subpixel" else (0,), np.float32)

    def run(idx, b, report):
        h = tf.one_hot(labels[idx], k) if k else None
        s = None if spatial is None else tf.constant(spatial[idx])
        return fn(tf.constant(images[idx]), h, s)

    return run_in_batches(run, len(images), min(batch_size, len(images)), progress)


def score_images(model, images, labels=None, batch_size=16, background=None, progress=None,
                 spatial=None):
    """Likelihood scores of uint8 images (N, H, W, C), or of int code maps (N, H, W) under a
    prior over codes: a dict of (N,) float64 arrays.

    "nll_nats": -log p(x) in nats (``nll_per_image``); "bits_per_dim": that / (ln 2 H W C), or
    for code maps "bits_per_code": that / (ln 2 H W); with a ``background`` model (same
    inputs), "llr": the background's bits per dimension (code) minus this model's. labels:
    (N,) ints for a class-conditional model (ignored otherwise; a conditional background
    takes them too); spatial: (N, Hs, Ws, D) maps for a spatially conditioned model (likewise).
    N need not be a multiple of batch_size. progress: called as progress(done, N) after each
    batch.
    """
    images = np.asarray(images)
    shape = images.shape[1:]
    key = "bits_per_code" if model.num_categories else "bits_per_dim"
    nll = _batched(model, "nll", images, labels, spatial, batch_size, progress)
    nll = nll.astype(np.float64)
    result = {"nll_nats": nll, key: bits_per_dim(nll, 1, shape)}
    if background is not None:
        bg = _batched(background, "nll", images, labels, spatial, batch_size, progress)
        result["llr"] = bits_per_dim(bg.astype(np.float64), 1, shape) - result[key]
    return result


def subpixel_nll(model, images, labels=None, batch_size=16, progress=None, spatial=None):
    """-log p(x_ijc | everything before it) in nats of every sub-pixel: (N, H, W, C) float64
    (``likelihood.subpixel_log_prob``; the baseline's softmax terms for a PixelCNN); of every
    code, (N, H, W), for a prior over codes."""
    return -_batched(model, "subpixel", images, labels, spatial, batch_size,
                     progress).astype(np.float64)


# ----------------------------------------------------------------------- input complexity
def mutate_inputs(x, rate, seed, num_values=256):
    """Replace each sub-pixel of the uint8 images x, independently with probability ``rate``,
    by a uniform random value in 0..255 (the input perturbation of Ren et al. 2019's background
    models); for int code maps, by a code in 0..num_values - 1. ``seed``: a stateless (2,) int
    seed; the same seed gives the same images."""
    s_mask, s_value = tf.unstack(tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), 2))
    replace = tf.random.stateless_uniform(tf.shape(x), s_mask) < rate
    values = tf.random.stateless_uniform(tf.shape(x), s_value, minval=0, maxval=num_values,
                                         dtype=tf.int32)
    return tf.where(replace, tf.cast(values, x.dtype), x)


def png_bytes(image):
    """A lossless PNG encoding of one uint8 image (H, W, C), at the highest compression
    level."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise InvalidInputError(f"an image must be uint8 (H, W, 1 or 3); got {a.dtype} {a.shape}")
    return iio.imwrite("<bytes>", a[..., 0] if a.shape[-1] == 1 else a, extension=".png",
                       compress_level=9)


def input_complexity(images):
    """(N,) float64: bits per dimension of each image's lossless PNG encoding, 8 x bytes /
    (H W C) (the complexity estimate L(x) of Serra et al. 2020)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InvalidInputError(f"images must be uint8 (N, H, W, C); got {images.dtype} "
                                f"{images.shape}")
    dims = float(np.prod(images.shape[1:]))
    return np.array([8.0 * len(png_bytes(im)) / dims for im in images], np.float64)


# ----------------------------------------------------------------------------- AUROC
def auroc(scores_in, scores_out):
    """Area under the ROC curve of telling ``scores_out`` from ``scores_in`` (higher score =
    more "out"): the probability that a random out-score exceeds a random in-score, ties
    counted 1/2 (the Mann-Whitney U statistic over n_in n_out), exactly."""
    a = np.asarray(scores_in, np.float64).ravel()
    b = np.asarray(scores_out, np.float64).ravel()
    if not len(a) or not len(b):
        raise InvalidInputError(f"auroc needs scores of both sets; got {len(a)} in and "
                                f"{len(b)} out")
    both = np.concatenate([a, b])
    if np.isnan(both).any():
        raise InvalidInputError("auroc: the scores hold NaN")
    order = np.argsort(both, kind="mergesort")
    _, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    ranks = np.empty(len(both))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)   # 1-based, ties averaged
    u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0
    return float(u / (len(a) * len(b)))
