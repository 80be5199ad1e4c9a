"""Sampling from PixelCNN++: the original's naive loop, and an exact cached ("fast") sampler.

    images = sample(model, batch_size, image_shape=(H, W, 3), h=None, seed=0, method="fast")
    codes = sample(prior, batch_size, (H, W), h=None, spatial=None, temperature=1.0)
    images = complete(model, images, num_given, h=None, seed=0, method="fast")

**naive** (``naive.py``) is the original algorithm: for every pixel (or code) in raster order,
run the whole network on the current canvas and copy the value sampled at that position in.

**fast** (``fast.py``; Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models") computes every activation of the network once, at the step where it
first gets all of its input, and caches what later steps read. It is exact: it evaluates the
same functions of the same sampled values, only in a different order (so floats agree up to
round-off).

Both draw their randomness from ``noise``: per-position uniforms derived statelessly from
(seed, i·W + j), so for one seed they sample the same images (and codes); both draw a
position's value through ``head.Head`` (mixture, categorical, energy distance).

``keep_traces(model, directory)`` keeps the fast sampler's traced functions on disk, so that
later processes load them instead of tracing again (``traces.py``).

This module holds the public functions and their argument checks; the modules depend one
way: ``noise``, ``fast_weights``, ``traces`` <- ``head`` <- ``naive``, ``fast`` <- this one.
"""

import math
import weakref

import numpy as np
import tensorflow as tf

from pixelcnn_pp.errors import InvalidInputError, UsageError
from pixelcnn_pp.sampling.fast import FastSampler
from pixelcnn_pp.sampling.naive import NaiveSampler
from pixelcnn_pp.sampling.noise import code_noise, energy_noise, position_noise, rows_noise
from pixelcnn_pp.sampling.traces import keep_traces

__all__ = ["sample", "complete", "keep_traces", "position_noise", "energy_noise", "code_noise",
           "rows_noise", "METHODS"]

METHODS = ("fast", "naive")
_SAMPLER_CLASSES = {"fast": FastSampler, "naive": NaiveSampler}


# ---------------------------------------------------------------------------- entry point
def sample(model, batch_size, image_shape=(32, 32, 3), h=None, spatial=None, seed=0,
           method="fast", temperature=1.0, averages=None, jit_compile=None, progress=None):
    """Draw ``batch_size`` images (or code maps, from a prior over codes) from a PixelCNN++.

    Args:
      model: a built PixelCNNPP (called once, or loaded from a checkpoint).
      batch_size: B >= 1.
      image_shape: (H, W, C), C = model.num_channels; for a prior over codes
        (model.num_categories = K) the map's (H, W). Any H, W >= 1.
      h: (B, h_dim) floats for a conditional model (one-hot labels for a class-conditional
        one), else None.
      spatial: (B, Hs, Ws, spatial_channels) floats for a model conditioned on a spatial map
        (H / Hs and W / Ws whole numbers), else None.
      seed: an int; the same seed gives the same images (with either method).
      method: "fast" (cached, the default) or "naive" (H·W full passes, the original).
      temperature: > 0; divides the logits of the codes, or of the mixture's components
        (with the logistic scales multiplied by it); 1 is the model's own distribution.
      averages: a PolyakAverage of the model's trainable variables: sample with the averaged
        weights (as the original does). None samples with the weights as they are.
      jit_compile: compile with XLA (True / False) the unit a call runs (fast: a group of
        four rows, their row-level parts and per-pixel loops; naive: a row's W passes). None
        picks plain TensorFlow, the faster end to end on CPU once compile time counts (see
        docs/SAMPLING.md).
      progress: optional callable progress(rows_done, H), called as rows complete (every
        row for "naive", every four rows for "fast").

    Returns:
      float32 numpy array (B, H, W, C) in [-1, 1], not rounded to 8 bits (as the original;
      see ``pixelcnn_pp.plotting.images_to_uint8``), or int32 codes (B, H, W) in [0, K). An
      energy-distance model samples each pixel through its own head (the first of its ten
      samples, as the original).
    """
    H, W, C = _check_args(model, batch_size, image_shape, h, spatial, method, seed,
                          temperature)
    return _draw(model, tf.zeros((int(batch_size), H, W, C)), 0, h, spatial, seed, method,
                 temperature, averages, jit_compile, progress)


def complete(model, images, num_given, h=None, spatial=None, seed=0, method="fast",
             temperature=1.0, averages=None, jit_compile=None, progress=None):
    """Complete images (or code maps): keep the first ``num_given`` positions, draw the rest.

    For every image b, returns one draw of the positions >= num_given (raster order) from
    the model's conditional given the ones before them, p(x_n, x_n+1, ... | x_<n =
    images[b, <n]): the autoregressive sampler of ``sample`` started at position num_given
    on a canvas holding the given values. A position is a whole pixel (all C channels) or
    one code; ``num_given = rows * W`` keeps the top rows.

    Exact in the sense of ``sample``: both methods use the same noise per position, so for one
    seed ``fast`` equals ``naive`` (to float round-off); ``num_given=0`` returns
    ``sample(model, B, (H, W, C), h, seed=seed)``'s images and ``num_given=H*W`` the input.

    Args:
      model: a built PixelCNNPP.
      images: float (B, H, W, C), C = model.num_channels, any H, W >= 1. The given pixels
        must lie in [-1, 1]; they are kept exactly as float32 values, on the 8-bit grid
        ((v - 127.5) / 127.5, as the data) or not (the model conditions on them as they
        are). For a prior over codes: int (B, H, W) codes, the given ones in [0, K).
        Positions from num_given on are ignored (any values).
      num_given: an int in 0 .. H·W, the number of positions kept.
      h, spatial, seed, method, temperature, averages, jit_compile, progress: as ``sample``.

    Returns:
      float32 numpy array (B, H, W, C): the given pixels bitwise, the drawn ones in [-1, 1],
      not rounded to 8 bits; or int32 codes (B, H, W).
    """
    canvas, num_given = _check_completion_args(model, images, num_given, h, spatial, method,
                                               seed, temperature)
    return _draw(model, tf.constant(canvas), num_given, h, spatial, seed, method,
                 temperature, averages, jit_compile, progress)


def _check_completion_args(model, images, num_given, h, spatial, method, seed, temperature):
    """(the canvas as float32 numpy (B, H, W, C), num_given as int), or a UsageError /
    InvalidInputError saying what is wrong."""
    codes = bool(model.num_categories)
    images = np.asarray(images)
    if codes:
        if not np.issubdtype(images.dtype, np.integer):
            raise InvalidInputError(f"this model is a prior over codes: give int codes in "
                                    f"[0, {model.num_categories}); got dtype {images.dtype}")
        if images.ndim != 3 or images.shape[0] < 1:
            raise InvalidInputError(f"codes must be a batch (B, H, W) with B >= 1; got shape "
                                    f"{images.shape}")
        B, H, W = images.shape
        _check_args(model, B, (H, W), h, spatial, method, seed, temperature)
    else:
        if not np.issubdtype(images.dtype, np.floating):
            raise InvalidInputError(f"images must be floats in [-1, 1] (8-bit values v as "
                                    f"(v - 127.5) / 127.5); got dtype {images.dtype}")
        if images.ndim != 4 or images.shape[0] < 1:
            raise InvalidInputError(f"images must be a batch (B, H, W, C) with B >= 1; got "
                                    f"shape {images.shape}")
        if images.shape[-1] != model.num_channels:
            raise InvalidInputError(f"this model draws {model.num_channels}-channel images; "
                                    f"the images have {images.shape[-1]} channels (shape "
                                    f"{images.shape})")
        B, H, W, C = images.shape
        _check_args(model, B, (H, W, C), h, spatial, method, seed, temperature)
    if not _is_int(num_given):
        raise UsageError(f"num_given must be an int (positions kept, raster order); got "
                         f"{num_given!r}")
    if not 0 <= num_given <= H * W:
        raise InvalidInputError(f"num_given must be between 0 and H*W = {H * W} (positions "
                                f"kept, raster order; rows * {W} keeps whole rows); got "
                                f"{num_given}")
    kept = images.reshape(B, H * W, -1)[:, :int(num_given)]
    if codes:
        outside = (kept < 0) | (kept >= model.num_categories)
        if outside.any():
            raise InvalidInputError(f"the given codes must lie in [0, {model.num_categories})"
                                    f"; {outside.sum()} of {kept.size} are outside it (e.g. "
                                    f"{int(kept[outside][0])})")
        canvas = np.where(np.arange(H * W).reshape(1, H, W) < num_given, images, 0)
        return canvas.astype(np.float32)[..., None], int(num_given)
    images = images.astype(np.float32)
    kept = kept.astype(np.float32)
    outside = ~(np.abs(kept) <= 1.0)                  # NaN is outside too
    if outside.any():
        raise InvalidInputError(f"the given pixels must lie in [-1, 1] (8-bit values v as "
                                f"(v - 127.5) / 127.5); {outside.sum()} of {kept.size} values "
                                f"are outside it (e.g. {float(kept[outside][0]):.6g})")
    return images, int(num_given)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_args(model, batch_size, image_shape, h, spatial, method, seed, temperature):
    """(H, W, C) of the canvas (C = 1 for codes), or a UsageError (arguments that do not go
    together) / InvalidInputError (a shape or value the sampler cannot use) saying what to
    do."""
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
    _check_temperature(model, temperature)
    H, W, C = _check_shape(model, image_shape)
    _check_h(model, batch_size, h)
    _check_spatial(model, batch_size, H, W, spatial)
    return H, W, C


def _check_temperature(model, temperature):
    if (isinstance(temperature, (bool, np.bool_))
            or not isinstance(temperature, (int, float, np.integer, np.floating))
            or not math.isfinite(temperature) or temperature <= 0):
        raise UsageError(f"temperature must be a finite number > 0 (1 samples the model's "
                         f"own distribution); got {temperature!r}")
    if model.energy_distance and temperature != 1:
        raise UsageError("an energy-distance model has no temperature (its head draws "
                         "samples, not a distribution): leave temperature at 1")


def _check_shape(model, shape):
    codes = model.num_categories
    want = "(H, W) (a prior over codes)" if codes else "(H, W, C)"
    if len(shape) != (2 if codes else 3) or not all(_is_int(s) for s in shape):
        raise InvalidInputError(f"image_shape must be {want}, got {shape}")
    H, W = int(shape[0]), int(shape[1])
    if H < 1 or W < 1:
        raise InvalidInputError(f"image height and width must be >= 1; got {H}x{W}")
    if codes:
        return H, W, 1
    C = int(shape[2])
    if C != model.num_channels:
        raise InvalidInputError(f"this model draws {model.num_channels}-channel images; "
                                f"image_shape has C={C}")
    return H, W, C


def _check_h(model, batch_size, h):
    D, K = model.h_dim, model.num_classes
    if D and h is None:
        what = (f"class-conditional (num_classes={K}): pass h, a ({batch_size}, {K}) one-hot "
                f"array of the labels to sample" if K else
                f"conditional (h_dim={D}): pass h, ({batch_size}, {D}) floats")
        raise UsageError(f"this model is {what}")
    if h is not None:
        if not D:
            raise UsageError("this model is unconditional: it takes no labels (h must be None)")
        name = "num_classes" if K else "h_dim"
        if tuple(np.shape(h)) != (batch_size, D):
            raise InvalidInputError(f"h must have shape (batch_size, {name}) = "
                                    f"({batch_size}, {D}); got {tuple(np.shape(h))}")
        if not np.all(np.isfinite(np.asarray(h, np.float64))):
            raise InvalidInputError("h must hold finite floats")


def _check_spatial(model, batch_size, H, W, spatial):
    Ds = model.spatial_channels
    if Ds and spatial is None:
        raise UsageError(f"this model is conditioned on a spatial map (spatial_channels="
                         f"{Ds}): pass spatial, ({batch_size}, Hs, Ws, {Ds}) floats with "
                         f"{H} / Hs and {W} / Ws whole numbers")
    if spatial is None:
        return
    if not Ds:
        raise UsageError("this model takes no spatial map (spatial must be None); build it "
                         "with spatial_channels=D to condition on one")
    s = tuple(np.shape(spatial))
    if (len(s) != 4 or s[0] != batch_size or s[3] != Ds or not s[1] or not s[2]
            or H % s[1] or W % s[2]):
        raise InvalidInputError(f"spatial must have shape ({batch_size}, Hs, Ws, {Ds}) with "
                                f"{H} / Hs and {W} / Ws whole numbers; got {s}")
    if not np.all(np.isfinite(np.asarray(spatial, np.float64))):
        raise InvalidInputError("spatial must hold finite floats")


def _draw(model, given, num_given, h, spatial, seed, method, temperature, averages,
          jit_compile, progress):
    """Run the sampler on checked arguments: given (B, H, W, C) float32 canvas, its first
    num_given positions kept. Returns ``Head.output`` of the canvas."""
    if averages is not None:
        with averages.swap():
            return _draw(model, given, num_given, h, spatial, seed, method, temperature,
                         None, jit_compile, progress)
    if jit_compile is None:
        jit_compile = _DEFAULT_JIT[method]
    B, H, W, _ = given.shape
    sampler = _get_sampler(model, method, B, H, W, h is not None, bool(jit_compile),
                           float(temperature))
    if h is not None:
        h = tf.convert_to_tensor(np.asarray(h, np.float32))
    if spatial is not None:
        spatial = tf.convert_to_tensor(np.asarray(spatial, np.float32))
    canvas = sampler.run(h, int(seed), progress, given, num_given, spatial)
    return sampler.head.output(canvas)


# XLA shortens the fast sampler's rows but its compile time outweighs that for a single call,
# and it slows a naive pass down (measured: docs/SAMPLING.md).
_DEFAULT_JIT = {"fast": False, "naive": False}


_SAMPLERS = weakref.WeakKeyDictionary()


def _get_sampler(model, method, B, H, W, conditional, jit, temperature=1.0):
    """The sampler for these shapes and temperature, from the model's cache: samplers keep
    their traced functions, so a second call with the same shapes reuses them. The cache
    holds the model weakly and dies with it (a model's layout and its ``fast_ops`` are fixed
    when it is built, so nothing else decides what is traced)."""
    cache = _SAMPLERS.setdefault(model, {})
    key = (method, B, H, W, conditional, jit, temperature)
    if key not in cache:
        cache[key] = _SAMPLER_CLASSES[method](model, B, H, W, jit, temperature)
    return cache[key]
