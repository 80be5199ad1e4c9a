"""Sampling from PixelCNN++: the original's naive loop, and an exact cached ("fast") sampler.

    images = sample(model, batch_size, image_shape=(H, W, 3), h=None, seed=0, method="fast")
    images = complete(model, images, num_given, h=None, seed=0, method="fast")

**naive** (``naive.py``) is the original algorithm: for every pixel in raster order, run the
whole network on the current image and copy the pixel sampled at that position in.

**fast** (``fast.py``; Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models") computes every activation of the network once, at the step where it
first gets all of its input, and caches what later steps read. It is exact: it evaluates the
same functions of the same sampled pixels, only in a different order (so floats agree up to
round-off).

Both draw their randomness from ``noise.position_noise``: per-position uniforms derived
statelessly from (seed, i·W + j), so for one seed they sample the same images.

This module holds the public functions and their argument checks; the modules depend one
way: ``noise`` <- ``naive``, ``fast`` (<- ``fast_weights``) <- this one.
"""

import weakref

import numpy as np
import tensorflow as tf

from pixelcnn_pp.errors import InvalidInputError, UsageError
from pixelcnn_pp.sampling.fast import FastSampler
from pixelcnn_pp.sampling.naive import NaiveSampler
from pixelcnn_pp.sampling.noise import energy_noise, position_noise, rows_noise

__all__ = ["sample", "complete", "position_noise", "energy_noise", "rows_noise", "METHODS"]

METHODS = ("fast", "naive")
_SAMPLER_CLASSES = {"fast": FastSampler, "naive": NaiveSampler}


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
    H, W, C = _check_args(model, batch_size, image_shape, h, method, seed)
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
    images, num_given = _check_completion_args(model, images, num_given, h, method,
                                               seed)
    return _draw(model, tf.constant(images), num_given, h, seed, method, averages,
                 jit_compile, progress)


def _check_completion_args(model, images, num_given, h, method, seed):
    """(images as float32 numpy (B, H, W, C), num_given as int), or a UsageError /
    InvalidInputError saying what is wrong."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise InvalidInputError(f"images must be floats in [-1, 1] (8-bit values v as "
                                f"(v - 127.5) / 127.5); got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[0] < 1:
        raise InvalidInputError(f"images must be a batch (B, H, W, C) with B >= 1; got shape "
                                f"{images.shape}")
    if images.shape[-1] != getattr(model, "num_channels", images.shape[-1]):
        raise InvalidInputError(f"this model draws {model.num_channels}-channel images; the "
                                f"images have {images.shape[-1]} channels (shape "
                                f"{images.shape})")
    B, H, W, C = images.shape
    _check_args(model, B, (H, W, C), h, method, seed)
    if not _is_int(num_given):
        raise UsageError(f"num_given must be an int (pixels kept, raster order); got "
                         f"{num_given!r}")
    if not 0 <= num_given <= H * W:
        raise InvalidInputError(f"num_given must be between 0 and H*W = {H * W} (pixels kept, "
                                f"raster order; rows * {W} keeps whole rows); got {num_given}")
    images = images.astype(np.float32)
    kept = images.reshape(B, H * W, C)[:, :int(num_given)]
    outside = ~(np.abs(kept) <= 1.0)                  # NaN is outside too
    if outside.any():
        raise InvalidInputError(f"the given pixels must lie in [-1, 1] (8-bit values v as "
                                f"(v - 127.5) / 127.5); {outside.sum()} of {kept.size} values "
                                f"are outside it (e.g. {float(kept[outside][0]):.6g})")
    return images, int(num_given)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_args(model, batch_size, image_shape, h, method, seed):
    """(H, W, C) of image_shape, or a UsageError (arguments that do not go together) /
    InvalidInputError (a shape or value the sampler cannot use) saying what to do."""
    if method not in METHODS:
        raise UsageError(f"method must be one of {METHODS}, got {method!r}")
    if not hasattr(model, "weight_norm_layers"):
        raise UsageError(f"sample() draws from a PixelCNNPP; got {type(model).__name__} (the "
                         "PixelCNN baseline samples with pixelcnn_pp.baseline.sample)")
    if not model.built_weights():
        raise UsageError("the model has no weights yet: load a checkpoint, or call it once on "
                         "a batch, before sampling")
    if not _is_int(batch_size) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    if not _is_int(seed):
        raise InvalidInputError(f"seed must be an int, got {seed!r}")
    if len(image_shape) != 3:
        raise InvalidInputError(f"image_shape must be (H, W, C), got {image_shape}")
    H, W, C = (int(s) for s in image_shape)
    n = len(model.downsample)
    if H < 2 ** n or W < 2 ** n or H % 2 ** n or W % 2 ** n:
        raise InvalidInputError(f"image height and width must be positive multiples of "
                                f"{2 ** n} ({n} 2x downsamplings); got {H}x{W}")
    if C != model.num_channels:
        raise InvalidInputError(f"this model draws {model.num_channels}-channel images; "
                                f"image_shape has C={C}")
    K = model.num_classes
    if K and h is None:
        raise UsageError(f"this model is class-conditional (num_classes={K}): pass h, a "
                         f"({batch_size}, {K}) one-hot array of the labels to sample")
    if h is not None:
        if not K:
            raise UsageError("this model is unconditional: it takes no labels (h must be None)")
        if tuple(np.shape(h)) != (batch_size, K):
            raise InvalidInputError(f"h must have shape (batch_size, num_classes) = "
                                    f"({batch_size}, {K}); got {tuple(np.shape(h))}")
    return H, W, C


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


# XLA shortens the fast sampler's per-pixel loop but its compile time outweighs that for a
# single call, and it slows a naive pass down (measured: docs/SAMPLING.md).
_DEFAULT_JIT = {"fast": False, "naive": False}


_SAMPLERS = weakref.WeakKeyDictionary()


def _get_sampler(model, method, B, H, W, conditional, jit):
    """The sampler for these shapes, from the model's cache: samplers keep their traced
    functions, so a second call with the same shapes reuses them. The cache holds the model
    weakly and dies with it (a model's layout and its ``fast_ops`` are fixed when it is built,
    so nothing else decides what is traced)."""
    cache = _SAMPLERS.setdefault(model, {})
    key = (method, B, H, W, conditional, jit)
    if key not in cache:
        cache[key] = _SAMPLER_CLASSES[method](model, B, H, W, jit)
    return cache[key]
