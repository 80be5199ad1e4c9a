"""Sampling from PixelCNN++: the original's naive loop, and an exact cached ("fast") sampler.

    images = sample(model, batch_size, image_shape=(H, W, 3), h=None, seed=0, method="fast")

**naive** is the original algorithm (docs/ORIGINAL.md §3): start from zeros and, for every pixel in
raster order, run the whole network on the current image and copy the pixel sampled at that
position in; H·W full passes per batch. Each row's W passes run as one compiled loop.

**fast** (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
Models") computes every activation of the network once, at the step where it first gets all
of its input, and caches what later steps read. It is exact: it evaluates the same functions
of the same sampled pixels, only in a different order (so floats agree up to round-off).

* The ``u`` stream (rows above) at row i depends only on image rows < i: at the start of each
  row it is computed for the whole row, from the row itself and the cached previous row of
  every conv's input (down-shifted convs read two rows). The ½- and ¼-resolution rows are
  computed on the rows where they get new input (every 2nd / 4th row), and a transposed conv
  emits two rows at once, the second cached for the next row.
* The ``ul`` stream (rows above and pixels to the left) at (i, j) depends on rows < i and
  pixels (i, < j): it advances one position per step. Its 2x2 down-right convs are split by
  rows: the taps on row i-1 are applied to the whole previous row at the start of the row
  (with the biases, the class term and everything the ``u`` stream feeds in), the taps on
  row i per pixel: the current value through tap (1, 1) and, for the next position, through
  tap (1, 0). The ½- and ¼-resolution ``ul`` layers step on even / multiple-of-4 positions
  of even / multiple-of-4 rows; a transposed conv emits a 2x2 block, of which the right
  pixel is used on the next step and the bottom row is cached for the next row.

Both methods draw their randomness from ``position_noise``: per-position uniforms derived
statelessly from (seed, i·W + j), so for one seed they sample the same images.
"""

import weakref

import numpy as np
import tensorflow as tf

from pixelcnn_pp import fast_ops
from pixelcnn_pp.likelihood import sample_from_discretized_mix_logistic
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["sample", "complete", "position_noise", "energy_noise", "METHODS"]

METHODS = ("fast", "naive")

_ALG = "philox"          # fixed, so that XLA and the plain kernels draw the same numbers
_LOW, _HIGH = 1e-5, 1.0 - 1e-5


# ---------------------------------------------------------------------------- noise
def _position_key(seed, i, j, width):
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    index = tf.cast(i, tf.int32) * width + tf.cast(j, tf.int32)
    return tf.random.experimental.stateless_fold_in(base, index, alg=_ALG)


def position_noise(seed, i, j, width, batch_size, nr_mix, num_channels=3):
    """The uniforms used to sample pixel (i, j) of a ``width``-wide image.

    Returns (u_mix (B, M), u (B, C)), U(1e-5, 1 - 1e-5): u_mix picks the mixture component
    (Gumbel-max), u the logistic sample of each channel. Derived statelessly from
    (seed, i * width + j), so every method sees the same noise at the same position.
    """
    key = _position_key(seed, i, j, width)
    fold = tf.random.experimental.stateless_fold_in
    u_mix = tf.random.stateless_uniform([batch_size, nr_mix], fold(key, 0, alg=_ALG),
                                        minval=_LOW, maxval=_HIGH, alg=_ALG)
    u = tf.random.stateless_uniform([batch_size, num_channels], fold(key, 1, alg=_ALG),
                                    minval=_LOW, maxval=_HIGH, alg=_ALG)
    return u_mix, u


def energy_noise(seed, i, j, width, batch_size):
    """The energy-distance head's U(-1, 1) noise for pixel (i, j): (B, 4)."""
    key = tf.random.experimental.stateless_fold_in(_position_key(seed, i, j, width), 2,
                                                   alg=_ALG)
    return tf.random.stateless_uniform([batch_size, 4], key, minval=-1.0, maxval=1.0, alg=_ALG)


@tf.function(autograph=False)
def rows_noise(seed, i0, rows, width, batch_size, nr_mix, num_channels, energy):
    """The noise of every position of rows i0 .. i0 + rows - 1: (rows, W, B, M),
    (rows, W, B, C) and, for an energy-distance model, (rows, W, B, 4). Drawn outside XLA,
    whose stateless RNG gives other numbers for the same seed."""
    def body(k, tas):
        i, j = i0 + k // width, k % width
        out = position_noise(seed, i, j, width, batch_size, nr_mix, num_channels)
        if energy:
            out += (energy_noise(seed, i, j, width, batch_size),)
        return k + 1, tuple(ta.write(k, o) for ta, o in zip(tas, out))

    n = rows * width
    tas = tuple(tf.TensorArray(tf.float32, size=n) for _ in range(3 if energy else 2))
    _, tas = tf.while_loop(lambda k, _: k < n, body, (tf.constant(0), tas))
    return tuple(tf.reshape(ta.stack(), [rows, width, batch_size, -1]) for ta in tas)


def sample_pixel(l, noise, nr_mix, num_channels):
    """l (B, P), noise (u_mix (B, M), u (B, C)) -> (B, C)."""
    u_mix, u = noise
    x = sample_from_discretized_mix_logistic(l[:, None, None, :], nr_mix, num_channels,
                                             noise=(u_mix[:, None, None], u[:, None, None]))
    return x[:, 0, 0]


# ---------------------------------------------------------------------------- entry point
def sample(model, batch_size, image_shape=(32, 32, 3), h=None, seed=0, method="fast",
           averages=None, jit_compile=None, progress=None):
    """Draw ``batch_size`` images from a PixelCNN++ model.

    Args:
      model: a built PixelCNNPP (called once, or loaded from a checkpoint).
      batch_size: B >= 1.
      image_shape: (H, W, C), H and W divisible by 4, C = model.num_channels.
      h: (B, num_classes) one-hot floats for a class-conditional model, else None.
      seed: an int; the same seed gives the same images (with either method).
      method: "fast" (cached, the default) or "naive" (H·W full passes, the original).
      averages: a PolyakAverage of the model's trainable variables: sample with the averaged
        weights (as the original does). None samples with the weights as they are.
      jit_compile: compile with XLA (True / False) the loop along a row (fast: the per-pixel
        steps; naive: the row's W passes). None picks plain TensorFlow, the faster end to end
        on CPU once compile time counts (see docs/SAMPLING.md).
      progress: optional callable progress(rows_done, H), called as rows complete (every
        row for "naive", every four rows for "fast").

    Returns:
      float32 numpy array (B, H, W, C) in [-1, 1], not rounded to 8 bits (as the original;
      see ``pixelcnn_pp.plotting.images_to_uint8``). An energy-distance model samples each
      pixel through its own head (the first of its ten samples, as the original).
    """
    H, W, C = _check_args(model, batch_size, image_shape, h, method)
    return _draw(model, tf.zeros((int(batch_size), H, W, C)), 0, h, seed, method, averages,
                 jit_compile, progress)


def complete(model, images, num_given, h=None, seed=0, method="fast", averages=None,
             jit_compile=None, progress=None):
    """Complete images: keep the first ``num_given`` pixels of each, draw the rest.

    For every image b, returns one draw of the pixels at raster positions >= num_given from
    the model's conditional given the pixels before them, p(x_n, x_n+1, ... | x_<n =
    images[b, <n]): the autoregressive sampler of ``sample`` started at position num_given
    on an image holding the given pixels. A position is a whole pixel (all C channels);
    ``num_given = rows * W`` keeps the top rows.

    Exact in the sense of ``sample``: both methods use the same noise per position, so for one
    seed ``fast`` equals ``naive`` (to float round-off); ``num_given=0`` returns
    ``sample(model, B, (H, W, C), h, seed)``'s images and ``num_given=H*W`` the input.

    Args:
      model: a built PixelCNNPP.
      images: float (B, H, W, C), C = model.num_channels, H and W multiples of 4. The given
        pixels must lie in [-1, 1]; they are kept exactly as float32 values, on the 8-bit
        grid ((v - 127.5) / 127.5, as the data) or not (the model conditions on them as they
        are). Pixels from position num_given on are ignored (any values).
      num_given: an int in 0 .. H·W, the number of pixels kept.
      h, seed, method, averages, jit_compile, progress: as ``sample``.

    Returns:
      float32 numpy array (B, H, W, C): the given pixels bitwise, the drawn ones in [-1, 1],
      not rounded to 8 bits.
    """
    images, num_given = _check_completion_args(model, images, num_given, h, method)
    return _draw(model, tf.constant(images), num_given, h, seed, method, averages,
                 jit_compile, progress)


def _check_completion_args(model, images, num_given, h, method):
    """(images as float32 numpy, num_given as int), or a ValueError saying what is wrong."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise InvalidInputError(f"images must be floats in [-1, 1] (8-bit values v as (v - 127.5) / "
                         f"127.5); got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[0] < 1:
        raise InvalidInputError(f"images must be a batch (B, H, W, C) with B >= 1; got shape "
                         f"{images.shape}")
    if images.shape[-1] != getattr(model, "num_channels", images.shape[-1]):
        raise InvalidInputError(f"this model draws {model.num_channels}-channel images; the images "
                         f"have {images.shape[-1]} channels (shape {images.shape})")
    B, H, W, C = images.shape
    _check_args(model, B, (H, W, C), h, method)
    if isinstance(num_given, (bool, np.bool_)) or not isinstance(num_given,
                                                                 (int, np.integer)):
        raise InvalidInputError(f"num_given must be an int (pixels kept, raster order); got "
                         f"{num_given!r}")
    if not 0 <= num_given <= H * W:
        raise InvalidInputError(f"num_given must be between 0 and H*W = {H * W} (pixels kept, "
                         f"raster order; rows * {W} keeps whole rows); got {num_given}")
    images = images.astype(np.float32)
    kept = images.reshape(B, H * W, C)[:, :int(num_given)]
    outside = ~(np.abs(kept) <= 1.0)                  # NaN is outside too
    if outside.any():
        raise InvalidInputError(f"the given pixels must lie in [-1, 1] (8-bit values v as (v - 127.5) "
                         f"/ 127.5); {outside.sum()} of {kept.size} values are outside it (e.g. "
                         f"{float(kept[outside][0]):.6g})")
    return images, int(num_given)


def _draw(model, given, num_given, h, seed, method, averages, jit_compile, progress):
    """Run the sampler on checked arguments: given (B, H, W, C) float32, its first num_given
    positions kept."""
    if averages is not None:
        with averages.swap():
            return _draw(model, given, num_given, h, seed, method, None, jit_compile,
                         progress)
    if jit_compile is None:
        jit_compile = _DEFAULT_JIT[method]
    B, H, W, _ = given.shape
    sampler = _get_sampler(model, method, B, H, W, h is not None, bool(jit_compile))
    if h is not None:
        h = tf.convert_to_tensor(np.asarray(h, np.float32))
    return sampler.run(h, int(seed), progress, given, num_given)


# Measured on CPU by benchmarks/sample_speed.py (docs/SAMPLING.md): XLA shortens the fast
# sampler's per-pixel loop by 10-30% but adds 15-25 s of compile to the first call, and it
# slows a naive pass down.
_DEFAULT_JIT = {"fast": False, "naive": False}


def _check_args(model, batch_size, image_shape, h, method):
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    if not hasattr(model, "weight_norm_layers"):
        raise TypeError(f"sample() draws from a PixelCNNPP; got {type(model).__name__} (the "
                        "PixelCNN baseline samples with pixelcnn_pp.baseline.sample)")
    if not model.built_weights():
        raise InvalidInputError("the model has no weights yet: load a checkpoint, or call it once "
                         "on a batch, before sampling")
    if int(batch_size) != batch_size or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(image_shape) != 3:
        raise InvalidInputError(f"image_shape must be (H, W, C), got {image_shape}")
    H, W, C = (int(s) for s in image_shape)
    if H < 4 or W < 4 or H % 4 or W % 4:
        raise InvalidInputError(f"image height and width must be positive multiples of 4 (two 2x "
                         f"downsamplings); got {H}x{W}")
    if C != model.num_channels:
        raise InvalidInputError(f"this model draws {model.num_channels}-channel images; "
                         f"image_shape has C={C}")
    K = model.num_classes
    if K and h is None:
        raise InvalidInputError(f"this model is class-conditional (num_classes={K}): pass h, a "
                         f"({batch_size}, {K}) one-hot array of the labels to sample")
    if h is not None:
        if not K:
            raise InvalidInputError("this model is unconditional: it takes no labels (h must be None)")
        if tuple(np.shape(h)) != (batch_size, K):
            raise InvalidInputError(f"h must have shape (batch_size, num_classes) = "
                             f"({batch_size}, {K}); got {tuple(np.shape(h))}")
    return H, W, C


_SAMPLERS = weakref.WeakKeyDictionary()


def _get_sampler(model, method, B, H, W, conditional, jit):
    """Samplers keep their compiled functions: a second call with the same shapes reuses them."""
    cache = _SAMPLERS.setdefault(model, {})
    key = (method, B, H, W, conditional, jit, fast_ops.enabled())   # traced with the switch
    if key not in cache:
        if method == "fast":
            from pixelcnn_pp.fast_sampling import FastSampler as cls
        else:
            cls = NaiveSampler
        cache[key] = cls(model, B, H, W, jit)
    return cache[key]


# ---------------------------------------------------------------------------- naive
def _keep_given(given, num_given):
    """given (B, H, W, C) with the positions >= num_given (raster order) set to zero."""
    _, H, W, _ = given.shape
    keep = tf.reshape(tf.range(H * W) < num_given, [1, H, W, 1])
    return tf.where(keep, given, tf.zeros_like(given))


class Sampler:
    """What a sampler offers: ``run(h, seed, progress, given, num_given)`` -> images.
    ``model``: a weak reference (the samplers are cached per model, and must not keep it
    alive)."""
    @property
    def model(self):
        return self._model()


class NaiveSampler(Sampler):
    """The original's loop: one full network pass per pixel, each row compiled as one loop."""

    def __init__(self, model, B, H, W, jit):
        self._model, self.B, self.H, self.W = weakref.ref(model), B, H, W
        self.C = model.num_channels
        self._row = tf.function(self._row_fn, jit_compile=jit, autograph=False)

    def _row_fn(self, x, i, j0, noise, h):
        """Row i from column j0 on (the positions before it are kept as they are in x)."""
        model, B, H, W, C = self.model, self.B, self.H, self.W, self.C
        M = model.nr_logistic_mix

        def body(j, x):
            pos = tf.reshape(tf.one_hot(i * W + j, H * W, on_value=True, off_value=False),
                             [1, H, W, 1])

            def head_noise():                                  # (10B, H, W, 4)
                n = tf.pad(tf.gather(noise[2], j), [[0, 9 * B], [0, 0]])
                return tf.where(pos, n[:, None, None, :], 0.0)

            if model.energy_distance:
                out = model(x, h=h, energy_noise=head_noise())
                pixel = out[0][:, i, j]                          # first of the ten samples
            else:
                l = model(x, h=h)[:, i, j]                       # (B, P)
                pixel = sample_pixel(l, (tf.gather(noise[0], j), tf.gather(noise[1], j)),
                                      M, C)
            return j + 1, tf.where(pos, pixel[:, None, None, :], x)

        _, x = tf.while_loop(lambda j, x: j < W, body, (j0, x))
        return x

    def run(self, h, seed, progress, given, num_given):
        """The images; positions < num_given (raster order) are ``given``'s, never drawn:
        the loop starts at position num_given, on an image holding the given pixels before it
        and zeros from it on (as when sampling from scratch)."""
        x = _keep_given(given, num_given)
        seed = tf.constant(seed, tf.int64)
        first_row, first_col = divmod(num_given, self.W)
        for i in range(first_row, self.H):
            noise = rows_noise(seed, tf.constant(i), 1, self.W, self.B,
                                self.model.nr_logistic_mix, self.C, self.model.energy_distance)
            j0 = tf.constant(first_col if i == first_row else 0)
            x = self._row(x, tf.constant(i), j0, [n[0] for n in noise], h)
            if progress is not None:
                progress(i + 1, self.H)
        return x.numpy()
