"""Scores of images under a trained model, for out-of-distribution detection (docs/SCORING.md).

    from pixelcnn_pp import scoring
    s = scoring.score_images(model, images, labels=None, batch_size=16, background=None)
    s["nll_nats"], s["bits_per_dim"]          # (N,) float64; s["llr"] with a background model
    c = scoring.input_complexity(images)      # (N,) bits/dim of a lossless PNG encoding
    a = scoring.auroc(scores_in, scores_out)  # higher score = more "out"

``images`` are uint8 (N, H, W, C). Scores use whatever weights the model holds: load it with
``checkpoint.load_for_inference(save_dir, use_averages=True)`` for the Polyak averages, as evaluation
does. Works for PixelCNN++ (RGB and grayscale, conditional with ``labels``) and the PixelCNN
baseline; an energy-distance model has no likelihood and is refused.

The scores (higher = more likely out of distribution):
    bits_per_dim      -log2 p(x) / (H W C)
    llr               bits/dim under a background model minus bits/dim under this one, the
                      likelihood ratio of Ren et al. 2019 per dimension (higher = more "in":
                      use -llr as an out-score)
    ic_score          bits/dim minus input_complexity (Serra et al. 2020)
"""

import weakref

import imageio.v3 as iio
import numpy as np
import tensorflow as tf

from pixelcnn_pp import fast_ops
from pixelcnn_pp.likelihood import bits_per_dim, scale_images
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["score_images", "mutate_inputs", "subpixel_nll", "input_complexity", "png_bytes", "auroc",
           "heatmap_image", "colour_map", "draw_text"]

# model -> {fast_ops switch when traced -> its traced scoring functions}
_FUNCTIONS = weakref.WeakKeyDictionary()


def _functions(model):
    """{"nll": (x uint8, h) -> (B,) nats, "subpixel": (x uint8, h) -> (B, H, W, C) log p},
    through the interface PixelCNNPP and the PixelCNN baseline share."""
    if getattr(model, "energy_distance", False):
        raise InvalidInputError("an energy-distance model has no likelihood to score images with: "
                         "score with a model trained on the likelihood")
    traced = _FUNCTIONS.setdefault(model, {})
    if fast_ops.enabled() in traced:
        return traced[fast_ops.enabled()]

    @tf.function(autograph=False)
    def nll(x, h):
        x = scale_images(x)
        return model.nll_per_image(x, model(x, h=h, training=False))

    @tf.function(autograph=False)
    def subpixel(x, h):
        x = scale_images(x)
        return model.subpixel_log_prob(x, model(x, h=h, training=False))

    traced[fast_ops.enabled()] = {"nll": nll, "subpixel": subpixel}
    return traced[fast_ops.enabled()]


def _check_images(model, images, labels):
    """uint8 (N, H, W, C) images of the model's channel count, and int labels for a
    conditional model; raises ValueError saying what is wrong."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InvalidInputError(f"images must be uint8 (N, H, W, C); got {images.dtype} "
                         f"{images.shape}")
    C = model.num_channels
    if images.shape[-1] != C:
        raise InvalidInputError(f"the model takes {C}-channel images; these have {images.shape[-1]} "
                         f"channels (shape {images.shape})")
    k = model.num_classes
    if not k:
        return images, None
    if labels is None:
        raise InvalidInputError(f"this model is class-conditional ({k} classes): it scores p(x | "
                         "label) and needs each image's label")
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (len(images),):
        raise InvalidInputError(f"labels must be ({len(images)},); got {labels.shape}")
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.size:
        raise InvalidInputError(f"labels {sorted(set(bad.tolist()))} out of range: the model has {k} "
                         f"classes (0 .. {k - 1})")
    return images, labels


def _batched(model, name, images, labels, batch_size, progress=None):
    """Run the model's function ``name`` over images in batches of batch_size (the last one
    padded with copies of its last image, the padding dropped); concatenated numpy output."""
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise InvalidInputError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    images, labels = _check_images(model, images, labels)
    fn = _functions(model)[name]
    k = model.num_classes
    n = len(images)
    b = min(batch_size, max(n, 1))
    out = []
    for start in range(0, n, b):
        x = images[start:start + b]
        m = len(x)
        pad = b - m
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        h = None
        if k:
            y = labels[start:start + b]
            y = np.concatenate([y, np.repeat(y[-1:], pad)]) if pad else y
            h = tf.one_hot(y, k)
        out.append(np.asarray(fn(tf.constant(x), h))[:m])
        if progress is not None:
            progress(start + m, n)
    if not out:
        return np.zeros((0,) + images.shape[1:] if name == "subpixel" else (0,), np.float32)
    return np.concatenate(out)


def score_images(model, images, labels=None, batch_size=16, background=None, progress=None):
    """Likelihood scores of uint8 images (N, H, W, C): a dict of (N,) float64 arrays.

    "nll_nats": -log p(x) in nats (``nll_per_image``); "bits_per_dim": that / (ln 2 H W C);
    with a ``background`` model (same image shape), "llr": the background's bits/dim minus
    this model's. labels: (N,) ints for a class-conditional model (ignored otherwise; a
    conditional background takes them too). N need not be a multiple of batch_size.
    progress: called as progress(images done, N) after each batch.
    """
    images = np.asarray(images)
    shape = images.shape[1:] if images.ndim == 4 else ()
    nll = _batched(model, "nll", images, labels, batch_size, progress).astype(np.float64)
    result = {"nll_nats": nll, "bits_per_dim": bits_per_dim(nll, 1, shape)}
    if background is not None:
        bg = _batched(background, "nll", images, labels, batch_size, progress)
        result["llr"] = bits_per_dim(bg.astype(np.float64), 1, shape) - result["bits_per_dim"]
    return result


def subpixel_nll(model, images, labels=None, batch_size=16, progress=None):
    """-log p(x_ijc | everything before it) in nats of every sub-pixel: (N, H, W, C) float64
    (``likelihood.subpixel_log_prob``; the baseline's softmax terms for a PixelCNN)."""
    return -_batched(model, "subpixel", images, labels, batch_size, progress).astype(np.float64)


# ----------------------------------------------------------------------- input complexity
def mutate_inputs(x, rate, seed):
    """Replace each sub-pixel of the uint8 images x, independently with probability ``rate``,
    by a uniform random value in 0..255 (the input perturbation of Ren et al. 2019's background
    models). ``seed``: a stateless (2,) int seed; the same seed gives the same images."""
    s_mask, s_value = tf.unstack(tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), 2))
    replace = tf.random.stateless_uniform(tf.shape(x), s_mask) < rate
    values = tf.random.stateless_uniform(tf.shape(x), s_value, minval=0, maxval=256,
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
        raise InvalidInputError(f"auroc needs scores of both sets; got {len(a)} in and {len(b)} out")
    both = np.concatenate([a, b])
    if np.isnan(both).any():
        raise InvalidInputError("auroc: the scores hold NaN")
    order = np.argsort(both, kind="mergesort")
    _, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    ranks = np.empty(len(both))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)   # 1-based, ties averaged
    u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0
    return float(u / (len(a) * len(b)))


# --------------------------------------------------------------------------- heatmaps
# A 5x7 bitmap font: the characters the heatmaps write.
_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 11001 10101 10011 10001 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "X": "10001 10001 01010 00100 01010 10001 10001",
}


def draw_text(canvas, text, top, left, scale=2, colour=(0, 0, 0)):
    """Write ``text`` (digits, . - + / : and the capitals of _GLYPHS) into an RGB uint8 canvas
    in place, each font pixel a scale x scale square; returns the width drawn."""
    x = left
    for ch in str(text).upper():
        glyph = _GLYPHS.get(ch)
        if glyph is None:
            raise InvalidInputError(f"the heatmap font has no glyph for {ch!r}")
        for r, row in enumerate(glyph.split()):
            for c, bit in enumerate(row):
                if bit == "1":
                    canvas[top + r * scale:top + (r + 1) * scale,
                           x + c * scale:x + (c + 1) * scale] = colour
        x += 6 * scale
    return x - left


def _text_width(text, scale):
    return 6 * scale * len(text)


# viridis at 9 evenly spaced points
_VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]],
                    np.float64)


def colour_map(t):
    """Values t in [0, 1] (any shape) -> uint8 RGB (..., 3) on the viridis scale."""
    t = np.clip(np.asarray(t, np.float64), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    return np.rint(_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).astype(np.uint8)


def _fmt(v):
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def heatmap_image(image, nll_bits, bits_per_dim=None, scale=None):
    """An RGB uint8 picture of one image beside its per-pixel NLL map in bits, with a colour
    bar labelled by the map's range (and the image's bits/dim when given).

    image: uint8 (H, W, C); nll_bits: (H, W), e.g. -subpixel_log_prob summed over channels /
    ln 2. Both panels are upscaled by ``scale`` (default: about 192 pixels on the long side).
    """
    image = np.asarray(image)
    nll_bits = np.asarray(nll_bits, np.float64)
    H, W = nll_bits.shape
    if image.shape[:2] != (H, W):
        raise InvalidInputError(f"image {image.shape} and map {nll_bits.shape} differ in size")
    s = scale or max(1, 192 // max(H, W))
    ts = 2                                          # text scale: 10 x 14 pixel characters
    line = 7 * ts + 6
    lo, hi = float(nll_bits.min()), float(nll_bits.max())
    labels = [_fmt(hi), _fmt((lo + hi) / 2), _fmt(lo)]
    label_w = max([_text_width("000.00", ts)] + [_text_width(t, ts) for t in labels])
    margin, gap, bar_w = 10, 10, 16
    ph, pw = H * s, W * s
    captions = ["NLL PER PIXEL IN BITS: " + f"{_fmt(lo)} TO {_fmt(hi)}"]
    if bits_per_dim is not None:
        captions.append(f"MEAN {_fmt(float(bits_per_dim))} BITS/DIM")
    width = margin + pw + gap + pw + gap + bar_w + 6 + label_w + margin
    width = max(width, 2 * margin + max(_text_width(c, ts) for c in captions))
    top = margin + line                             # panel titles above
    height = top + ph + 8 + line * len(captions) + margin
    canvas = np.full((height, width, 3), 255, np.uint8)

    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    left1, left2 = margin, margin + pw + gap
    canvas[top:top + ph, left1:left1 + pw] = np.kron(rgb, np.ones((s, s, 1), np.uint8))
    t = (nll_bits - lo) / (hi - lo) if hi > lo else np.zeros_like(nll_bits)
    canvas[top:top + ph, left2:left2 + pw] = np.kron(colour_map(t), np.ones((s, s, 1),
                                                                             np.uint8))
    draw_text(canvas, "IMAGE", margin, left1, ts)
    draw_text(canvas, "NLL BITS", margin, left2, ts)

    bar_left = left2 + pw + gap                     # the colour bar: hi at the top
    ramp = colour_map(np.linspace(1.0, 0.0, ph))[:, None, :]
    canvas[top:top + ph, bar_left:bar_left + bar_w] = ramp
    text_left = bar_left + bar_w + 6
    for text, y in zip(labels, (top, top + ph // 2 - 7 * ts // 2, top + ph - 7 * ts)):
        draw_text(canvas, text, y, text_left, ts)
    y = top + ph + 8
    for c in captions:
        draw_text(canvas, c, y, margin, ts)
        y += line
    return canvas
