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

import contextlib
import time
import weakref

import numpy as np
import tensorflow as tf

from pixelcnn_pp import layers as L
from pixelcnn_pp.likelihood import sample_from_discretized_mix_logistic

__all__ = ["sample", "complete", "position_noise", "energy_noise", "METHODS",
           "load_model_for_sampling", "sample_labels", "batch_seed", "sample_to_files",
           "ProgressBar"]

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
def _rows_noise(seed, i0, rows, width, batch_size, nr_mix, num_channels, energy):
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


def _sample_pixel(l, noise, nr_mix, num_channels):
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
        raise ValueError(f"images must be floats in [-1, 1] (8-bit values v as (v - 127.5) / "
                         f"127.5); got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"images must be a batch (B, H, W, C) with B >= 1; got shape "
                         f"{images.shape}")
    if images.shape[-1] != getattr(model, "num_channels", images.shape[-1]):
        raise ValueError(f"this model draws {model.num_channels}-channel images; the images "
                         f"have {images.shape[-1]} channels (shape {images.shape})")
    B, H, W, C = images.shape
    _check_args(model, B, (H, W, C), h, method)
    if isinstance(num_given, (bool, np.bool_)) or not isinstance(num_given,
                                                                 (int, np.integer)):
        raise ValueError(f"num_given must be an int (pixels kept, raster order); got "
                         f"{num_given!r}")
    if not 0 <= num_given <= H * W:
        raise ValueError(f"num_given must be between 0 and H*W = {H * W} (pixels kept, "
                         f"raster order; rows * {W} keeps whole rows); got {num_given}")
    images = images.astype(np.float32)
    kept = images.reshape(B, H * W, C)[:, :int(num_given)]
    outside = ~(np.abs(kept) <= 1.0)                  # NaN is outside too
    if outside.any():
        raise ValueError(f"the given pixels must lie in [-1, 1] (8-bit values v as (v - 127.5) "
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
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not hasattr(model, "weight_norm_layers"):
        raise TypeError(f"sample() draws from a PixelCNNPP; got {type(model).__name__} (the "
                        "PixelCNN baseline samples with pixelcnn_pp.baseline.sample)")
    if not model.built_weights():
        raise ValueError("the model has no weights yet: load a checkpoint, or call it once "
                         "on a batch, before sampling")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
    H, W, C = (int(s) for s in image_shape)
    if H < 4 or W < 4 or H % 4 or W % 4:
        raise ValueError(f"image height and width must be positive multiples of 4 (two 2x "
                         f"downsamplings); got {H}x{W}")
    if C != model.num_channels:
        raise ValueError(f"this model draws {model.num_channels}-channel images; "
                         f"image_shape has C={C}")
    K = model.num_classes
    if K and h is None:
        raise ValueError(f"this model is class-conditional (num_classes={K}): pass h, a "
                         f"({batch_size}, {K}) one-hot array of the labels to sample")
    if h is not None:
        if not K:
            raise ValueError("this model is unconditional: it takes no labels (h must be None)")
        if tuple(np.shape(h)) != (batch_size, K):
            raise ValueError(f"h must have shape (batch_size, num_classes) = "
                             f"({batch_size}, {K}); got {tuple(np.shape(h))}")
    return H, W, C


_SAMPLERS = weakref.WeakKeyDictionary()


def _get_sampler(model, method, B, H, W, conditional, jit):
    """Samplers keep their compiled functions: a second call with the same shapes reuses them."""
    cache = _SAMPLERS.setdefault(model, {})
    key = (method, B, H, W, conditional, jit)
    if key not in cache:
        cls = _FastSampler if method == "fast" else _NaiveSampler
        cache[key] = cls(model, B, H, W, jit)
    return cache[key]


# ---------------------------------------------------------------------------- naive
@contextlib.contextmanager
def _energy_head_noise(model, noise_fn):
    """Make the model's energy-distance head use ``noise_fn()`` for its noise while tracing.

    The model draws the head's noise from its own generator; the samplers need the
    per-position noise instead. The model's forward pass is otherwise used as it is.
    """
    if not model.energy_distance:
        yield
        return
    head = type(model)._energy_distance_head
    object.__setattr__(model, "_energy_distance_head",
                       lambda ul, noise=None: head(model, ul, noise=noise_fn()))
    try:
        yield
    finally:
        object.__delattr__(model, "_energy_distance_head")


def _keep_given(given, num_given):
    """given (B, H, W, C) with the positions >= num_given (raster order) set to zero."""
    _, H, W, _ = given.shape
    keep = tf.reshape(tf.range(H * W) < num_given, [1, H, W, 1])
    return tf.where(keep, given, tf.zeros_like(given))


class _Sampler:
    # A weak reference: the samplers are cached per model, and must not keep it alive.
    @property
    def model(self):
        return self._model()


class _NaiveSampler(_Sampler):
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

            with _energy_head_noise(model, head_noise):
                out = model(x, h=h)
            if model.energy_distance:
                pixel = out[0][:, i, j]                          # first of the ten samples
            else:
                l = out[:, i, j]                                 # (B, P)
                pixel = _sample_pixel(l, (tf.gather(noise[0], j), tf.gather(noise[1], j)),
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
            noise = _rows_noise(seed, tf.constant(i), 1, self.W, self.B,
                                self.model.nr_logistic_mix, self.C, self.model.energy_distance)
            j0 = tf.constant(first_col if i == first_row else 0)
            x = self._row(x, tf.constant(i), j0, [n[0] for n in noise], h)
            if progress is not None:
                progress(i + 1, self.H)
        return x.numpy()


# ---------------------------------------------------------------------------- fast
def _f32(v):
    return tf.cast(tf.convert_to_tensor(v), tf.float32)


def _dense_weights(layer, dtype=tf.float32):
    """A weight-normed dense / nin layer as a plain (Cin, F) matrix and bias, normalised in
    float32 and cast to ``dtype``."""
    V, g = _f32(layer.V), _f32(layer.g)
    w = V * (g / tf.sqrt(tf.reduce_sum(tf.square(V), 0)))
    return tf.cast(w, dtype), tf.cast(_f32(layer.b), dtype)


def _dense(x, wb):
    """(..., Cin) -> (..., F)."""
    w, b = wb
    y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), w) + b
    return tf.reshape(y, x.shape[:-1] + [w.shape[-1]])


def _shift_right(x):
    """(B, W, C): drop the last column, prepend zeros."""
    return tf.pad(x[:, :-1], [[0, 0], [1, 0], [0, 0]])


def _concat_rows(nl_name, F):
    """Rows of a nin weight on nl(concat([u, ul])) that multiply nl(u) and nl(ul)."""
    r = np.arange
    if nl_name == "concat_elu":   # nl(concat([u, ul])) = elu([u, ul, -u, -ul])
        return np.concatenate([r(0, F), r(2 * F, 3 * F)]), np.concatenate([r(F, 2 * F),
                                                                           r(3 * F, 4 * F)])
    return r(0, F), r(F, 2 * F)


class _FastSampler(_Sampler):
    """Cached exact sampling. See the module docstring for the schedule.

    Levels 0, 1, 2 are the full, 1/2 and 1/4 resolutions. Row i is computed by ``_row`` for
    its kind t (i mod 4 decides which levels get new rows): the row-level part, then a loop
    over the columns, four at a time (j mod 4 decides which levels get a new position), then
    the caches for the next row. One compiled call runs four rows.

    Precision: the network runs in the model's compute dtype (bfloat16 or float16 under a
    Keras mixed-precision policy, as the naive sampler's passes): weights normalised in
    float32, then cast; activations and caches in the compute dtype. The sampled pixels, the
    image and the likelihood's sampling step stay float32.
    """

    def __init__(self, model, B, H, W, jit):
        self._model, self.B, self.H, self.W = weakref.ref(model), B, H, W
        self.C = model.num_channels
        self.dtype = tf.as_dtype(model.compute_dtype)
        self.R, self.F = model.nr_resnet, model.nr_filters
        self.M = model.nr_logistic_mix
        self.nl_name = model.resnet_nonlinearity
        self.nl = L.NONLINEARITIES[self.nl_name]
        self.Fn = 2 * self.F if self.nl_name == "concat_elu" else self.F   # channels of nl(u)
        self.widths = [W, W // 2, W // 4]
        # One compiled call per four rows (a call's overhead grows with the hundreds of
        # cached tensors it carries); one loop function per kind of row (rows 1 and 3 mod 4
        # are alike), which may be compiled with XLA.
        self._rows4 = tf.function(self._four_rows, autograph=False)
        self._loops = [tf.function(lambda *a, t=t: self._pixel_loop(t, *a), jit_compile=jit,
                                   autograph=False) for t in range(3)]

    # ------------------------------------------------------------------ weights
    def _blocks(self, kind):
        """The gated resnets of 'up_u', 'up_ul', 'down_u' or 'down_ul' as one list per level
        (full, 1/2, 1/4 resolution)."""
        blocks = getattr(self.model, kind)
        R = self.R
        if kind.startswith("up"):
            return [[blocks[lvl * R + k] for k in range(R)] for lvl in range(3)]
        # The down pass runs at 1/4, 1/2, full resolution with R, R+1, R+1 blocks.
        quarter, half, full = blocks[:R], blocks[R:2 * R + 1], blocks[2 * R + 1:]
        return [full, half, quarter]

    def _weights(self, h):
        """Effective (weight-normalised) weights, computed once per sampling call."""
        m, F, dt = self.model, self.F, self.dtype

        def c(v):             # float32 weights (normalised in float32) -> the compute dtype
            return tf.cast(_f32(v), dt)

        def conv(layer):
            return {"k": c(layer.kernel()), "b": c(layer.b)}

        def ul_conv(layer):   # 2x2 down-right conv: row i-1 taps, and [tap (1,1) | tap (1,0)]
            k = c(layer.kernel())
            return {"top": k[:1], "cur": tf.concat([k[1, 1], k[1, 0]], -1), "b": c(layer.b)}

        def hterm(blk):
            if h is None:
                return tf.zeros((1, 2 * F), dt)
            return tf.matmul(tf.cast(h, dt), c(blk.hw))            # (B, 2F)

        def block(blk, a_split=False):
            d = {"h": hterm(blk)}
            if blk.nin_a is not None:
                w, b = _dense_weights(blk.nin_a, dt)
                if a_split:   # a = concat([u, ul]): the u part is known per row
                    iu, iul = _concat_rows(self.nl_name, F)
                    d["a_u"], d["a_ul"] = (tf.gather(w, iu), b), tf.gather(w, iul)
                else:
                    d["a"] = (w, b)
            return d

        w = {}
        for kind in ("up_u", "down_u"):
            w[kind] = [[dict(block(b), conv1=conv(b.conv1), conv2=conv(b.conv2)) for b in lvl]
                       for lvl in self._blocks(kind)]
        for kind in ("up_ul", "down_ul"):
            w[kind] = [[dict(block(b, a_split=kind == "down_ul"), conv1=ul_conv(b.conv1),
                             conv2=ul_conv(b.conv2)) for b in lvl]
                       for lvl in self._blocks(kind)]
        w["u_init"] = conv(m.u_init)
        kd, kr = c(m.ul_init_down.kernel()), c(m.ul_init_right.kernel())
        w["ul_init"] = {"down": kd, "bd": c(m.ul_init_down.b), "r_top": kr[0, 0],
                        "r_cur": kr[1, 0], "br": c(m.ul_init_right.b)}
        w["ds_u"] = [conv(l) for l in m.downsample_u]
        w["ds_ul"] = []
        for layer in m.downsample_ul:
            k = c(layer.kernel())
            w["ds_ul"].append({"top": k[:1], "k10": k[1, 0], "k11": k[1, 1], "b": c(layer.b)})
        # Transposed convs: the model's upsample_*[0] goes 1/4 -> 1/2 (into level 1).
        w["us_u"] = [conv(l) for l in m.upsample_u]
        w["us_ul"] = []
        for layer in m.upsample_ul:
            k = c(layer.kernel())                                 # (2, 2, F, Cin)
            # Output (2r + a, 2c + b) = x(r, c) @ k[a, b]^T: one matmul for the 2x2 block,
            # columns ordered (0,0), (0,1), (1,0), (1,1).
            mats = [tf.transpose(k[a, b]) for a in range(2) for b in range(2)]
            w["us_ul"].append((tf.concat(mats, -1), tf.tile(c(layer.b), [4])))
        if m.energy_distance:
            w["head"] = {n: _dense_weights(getattr(m, n), dt)
                         for n in ("ed_features", "ed_noise", "ed_hidden", "ed_out")}
        else:
            w["head"] = {"out": _dense_weights(m.out_nin, dt)}
        return w

    # ------------------------------------------------------------------ state
    def _initial_state(self):
        B, F, Fn, R, Wd, dt = self.B, self.F, self.Fn, self.R, self.widths, self.dtype
        z = lambda lvl, c: tf.zeros((B, Wd[lvl], c), dt)
        nd = [R + 1, R + 1, R]
        return {
            "image": tf.zeros((B, self.H, self.W, self.C)),
            # previous row of (nl(x), nl(c1)) of every gated resnet, per level
            "u_up": [[(z(l, Fn), z(l, Fn)) for _ in range(R)] for l in range(3)],
            "u_down": [[(z(l, Fn), z(l, Fn)) for _ in range(nd[l])] for l in range(3)],
            "ul_up": [[(z(l, Fn), z(l, Fn)) for _ in range(R)] for l in range(3)],
            "ul_down": [[(z(l, Fn), z(l, Fn)) for _ in range(nd[l])] for l in range(3)],
            # previous row of the input of the stride-2 convs into levels 1 and 2
            "u_ds": [z(0, F), z(1, F)],
            "ul_ds": [z(0, F), z(1, F)],
            # transposed-conv rows from the coarser level: u (B, 2, W_l, F) for levels 0, 1;
            # ul (W_l, B, F), the bottom row of the 2x2 blocks, for the next row
            "u_us": [tf.zeros((B, 2, Wd[0], F), dt), tf.zeros((B, 2, Wd[1], F), dt)],
            "ul_us": [tf.zeros((Wd[0], B, F), dt), tf.zeros((Wd[1], B, F), dt)],
        }

    # ------------------------------------------------------------------ row level (u stream)
    @staticmethod
    def _row_conv(prev, cur, wk, stride=1):
        """Down-shifted (2, 3) conv of rows (prev, cur), (B, W, C) each -> (B, W/stride, F)."""
        x = tf.stack([prev, cur], axis=1)
        y = tf.nn.conv2d(x, wk["k"], [1, 1, stride, 1], [[0, 0], [0, 0], [1, 1], [0, 0]])
        return y[:, 0] + wk["b"]

    @staticmethod
    def _top_conv(prev, top, stride=1):
        """Taps on row i-1 of a (2, 2) down-right conv: (B, W, C) -> (B, W/stride, F)."""
        y = tf.nn.conv2d(prev[:, None], top, [1, 1, stride, 1], [[0, 0], [0, 0], [1, 0], [0, 0]])
        return y[:, 0]

    def _u_block(self, wb, x, prev, a=None):
        """One gated resnet of the u stream on a whole row: x (B, W, F) -> (B, W, F)."""
        nl, F = self.nl, self.F
        xn = nl(x)
        c1 = self._row_conv(prev[0], xn, wb["conv1"])
        if a is not None:
            c1 += _dense(nl(a), wb["a"])
        c1n = nl(c1)
        c2 = self._row_conv(prev[1], c1n, wb["conv2"]) + wb["h"][:, None, :]
        return x + c2[..., :F] * tf.sigmoid(c2[..., F:]), (xn, c1n)

    def _deconv_u(self, x, wk):
        """Down-shifted (2, 3) stride-2 transposed conv of one row: (B, W, F) -> (B, 2, 2W, F)."""
        B, Wc, _ = x.shape
        y = tf.nn.conv2d_transpose(x[:, None], wk["k"], [B, 3, 2 * Wc + 2, self.F],
                                   [1, 2, 2, 1], padding="VALID")
        return y[:, :2, 1:2 * Wc + 1] + wk["b"]

    def _u_rows(self, t, st, w, new, xp, i):
        """The u stream at row i on every level that gets a new row. Returns the up-pass
        rows u_up[level] (R + 1 of them) and the down-pass rows u_down[level]."""
        R = self.R
        levels = self._levels(t)
        u_up, u_down = {}, {}
        for lvl in levels:
            if lvl == 0:       # down_shift(u_init(x_pad)): rows i-2, i-1; zeros on row 0
                u = self._row_conv(xp[:, 0], xp[:, 1], w["u_init"]) * tf.cast(i > 0, self.dtype)
            else:
                u = self._row_conv(st["u_ds"][lvl - 1], u_up[lvl - 1][R], w["ds_u"][lvl - 1], 2)
            rows, prevs = [u], []
            for k in range(R):
                u, p = self._u_block(w["up_u"][lvl][k], u, st["u_up"][lvl][k])
                rows.append(u)
                prevs.append(p)
            u_up[lvl] = rows
            new["u_up"][lvl] = prevs
            if lvl < 2:
                new["u_ds"][lvl] = rows[R]
        for lvl in reversed(levels):
            if lvl == 2:
                u, a_rows = u_up[2][R], u_up[2][:R]
            else:
                u, a_rows = new["u_us"][lvl][:, (t >> lvl) % 2], u_up[lvl]
            rows, prevs = [], []
            for k in range(len(a_rows)):
                u, p = self._u_block(w["down_u"][lvl][k], u, st["u_down"][lvl][k],
                                     a=a_rows[-1 - k])
                rows.append(u)
                prevs.append(p)
            u_down[lvl] = rows
            new["u_down"][lvl] = prevs
            if lvl > 0:        # two rows of the next finer level
                new["u_us"][lvl - 1] = self._deconv_u(u, w["us_u"][2 - lvl])
        return levels, u_up, u_down

    def _ul_above(self, lvl, st, w, u_up, u_down, xp, i):
        """Everything the ul-stream convs of one level get from the row above (and from the
        u stream, biases and labels), for the whole row: a list of (B, W_l, F_k)."""
        nl, R = self.nl, self.R
        out = []
        if lvl == 0:
            wi = w["ul_init"]
            prev = xp[:, 1]                                            # x_pad row i-1
            down = tf.nn.conv2d(prev[:, None], wi["down"], 1, [[0, 0], [0, 0], [1, 1], [0, 0]])
            out.append((down[:, 0] + wi["bd"]) * tf.cast(i > 0, self.dtype)
                       + _shift_right(_dense(prev, (wi["r_top"], wi["br"]))))
        else:
            d = w["ds_ul"][lvl - 1]
            out.append(self._top_conv(st["ul_ds"][lvl - 1], d["top"], 2) + d["b"])
        for k in range(R):
            wb, prev = w["up_ul"][lvl][k], st["ul_up"][lvl][k]
            out.append(self._top_conv(prev[0], wb["conv1"]["top"]) + wb["conv1"]["b"]
                       + _dense(nl(u_up[lvl][k + 1]), wb["a"]))
            out.append(self._top_conv(prev[1], wb["conv2"]["top"]) + wb["conv2"]["b"]
                       + wb["h"][:, None, :])
        for k, wb in enumerate(w["down_ul"][lvl]):
            prev = st["ul_down"][lvl][k]
            out.append(self._top_conv(prev[0], wb["conv1"]["top"]) + wb["conv1"]["b"]
                       + _dense(nl(u_down[lvl][k]), wb["a_u"]))
            out.append(self._top_conv(prev[1], wb["conv2"]["top"]) + wb["conv2"]["b"]
                       + wb["h"][:, None, :])
        return out

    # ------------------------------------------------------------------ pixel level (ul stream)
    def _ul_block(self, wb, x, above, pend, a_n=None):
        """One gated resnet of the ul stream at one position: x (B, F) -> (B, F).

        above: (row-above part of conv1, of conv2); pend: (tap (1,0) of the previous position
        for conv1, conv2). Returns out, its records (nl(x), nl(c1)) and the pendings for the
        next position.
        """
        # Written with few ops (split, add_n): per-op overhead bounds this loop on CPU.
        nl = self.nl
        xn = nl(x)
        y1, next1 = tf.split(tf.matmul(xn, wb["conv1"]["cur"]), 2, axis=1)     # (B, F) x 2
        terms = [above[0], pend[0], y1]
        if a_n is not None:
            terms.append(tf.matmul(a_n, wb["a_ul"]))
        c1n = nl(tf.add_n(terms))
        y2, next2 = tf.split(tf.matmul(c1n, wb["conv2"]["cur"]), 2, axis=1)    # (B, 2F) x 2
        a, b = tf.split(tf.add_n([above[1], pend[1], y2]), 2, axis=1)
        return x + a * tf.sigmoid(b), (xn, c1n), (next1, next2)

    def _ul_up(self, lvl, w, start, above, pend):
        """The up pass of one level at one position. Returns the level's ul list (R + 1),
        nl() of its first R entries, records and pendings."""
        ul, lst, lst_n, recs, pends = start, [start], [], [], []
        for k in range(self.R):
            ul, rec, p = self._ul_block(w["up_ul"][lvl][k], ul, above[2 * k:2 * k + 2],
                                        pend[k])
            lst.append(ul)
            lst_n.append(rec[0])
            recs += rec
            pends.append(p)
        return lst, lst_n, recs, pends

    def _ul_down(self, lvl, w, start, lst, lst_n, above, pend):
        """The down pass of one level at one position; ``lst`` is that level's up-pass list."""
        ul, recs, pends = start, [], []
        n = len(w["down_ul"][lvl])
        a_ns = list(lst_n)
        if n == self.R + 1:
            a_ns.append(self.nl(lst[self.R]))
        for k in range(n):
            ul, rec, p = self._ul_block(w["down_ul"][lvl][k], ul, above[2 * k:2 * k + 2],
                                        pend[k], a_n=a_ns[-1 - k])
            recs += rec
            pends.append(p)
        return ul, recs, pends

    def _head(self, w, ul, noise):
        """(B, F) -> the sampled pixel (B, C); noise: this position's (u_mix, u[, ed])."""
        m, hw = self.model, w["head"]
        f = tf.nn.elu(ul)
        if m.energy_distance:
            f = (_dense(f, hw["ed_features"])
                 + _dense(tf.cast(noise[2], self.dtype), hw["ed_noise"]))
            f = _dense(L.concat_elu(f), hw["ed_hidden"])
            return tf.tanh(tf.cast(_dense(L.concat_elu(f), hw["ed_out"]), tf.float32))
        # The mixture parameters are sampled from in float32 (as the model's likelihood).
        return _sample_pixel(tf.cast(_dense(f, hw["out"]), tf.float32), noise[:2], self.M,
                             self.C)

    # ------------------------------------------------------------------ one row
    @staticmethod
    def _levels(t):
        """Levels that get a new row on a row of kind t: 0 (i mod 4 = 0), 1 (i odd) or
        2 (i mod 4 = 2)."""
        return [0] if t % 2 else [0, 1] if t == 2 else [0, 1, 2]

    def _image_rows_above(self, image, i):
        """x_pad rows i-2 and i-1 (zeros above the image, ones channel included) in the
        compute dtype: (B, 2, W, C+1)."""
        image = tf.cast(image, self.dtype)
        x_pad = tf.concat([image, tf.ones_like(image[..., :1])], -1)
        return tf.gather(tf.pad(x_pad, [[0, 0], [2, 0], [0, 0], [0, 0]]), tf.stack([i, i + 1]),
                         axis=1)

    def _row(self, t, st, w, i, noise, given, num_given):
        """Row i of kind t (static, see _levels) given the caches ``st``; returns the new
        caches. noise: (W, B, .) per position of the row; the positions < num_given (raster
        order) take ``given``'s pixels (B, H, W, C) instead of drawn ones."""
        B, H, R, F, C = self.B, self.H, self.R, self.F, self.C
        new = {k: list(v) if isinstance(v, list) else v for k, v in st.items()}
        xp = self._image_rows_above(st["image"], i)
        levels, u_up, u_down = self._u_rows(t, st, w, new, xp, i)
        # Row-above parts of every ul conv, packed as (W_l, B, sum of F_k) per level so that
        # a step reads all of them with one gather and one split.
        packed = [tf.transpose(tf.concat(self._ul_above(lvl, st, w, u_up, u_down, xp, i), -1),
                               [1, 0, 2]) for lvl in levels]
        wl = {k: w[k] for k in ("up_ul", "down_ul", "ds_ul", "us_ul", "ul_init", "head")}
        given_row = tf.transpose(tf.gather(given, i, axis=1), [1, 0, 2])     # (W, B, C)
        n_given = tf.clip_by_value(num_given - i * self.W, 0, self.W)    # of this row
        records, pixels = self._loops[t](packed, st["ul_us"], wl, noise, given_row, n_given)

        # ---- unpack this row's records into the caches for the next row
        Fn = self.Fn
        for lvl, rows in zip(levels, records):
            rows = tf.transpose(rows, [1, 0, 2])                      # (B, W_l, S)
            n_down = len(w["down_ul"][lvl])
            split = [Fn] * (2 * R + 2 * n_down)
            extra = []
            if lvl == 0 and t % 2 == 1 or lvl == 1 and t == 2:
                extra.append("ds")
            if lvl > 0:
                extra.append("us")
            widths = {"ds": F, "us": 2 * F}
            parts = tf.split(rows, split + [widths[e] for e in extra], axis=-1)
            recs = parts[:len(split)]
            new["ul_up"][lvl] = [(recs[2 * k], recs[2 * k + 1]) for k in range(R)]
            new["ul_down"][lvl] = [(recs[2 * (R + k)], recs[2 * (R + k) + 1])
                                   for k in range(n_down)]
            for name, part in zip(extra, parts[len(split):]):
                if name == "ds":
                    new["ul_ds"][lvl] = part
                else:                 # "us": (B, W_l, 2F) -> (W_{l-1}, B, F)
                    new["ul_us"][lvl - 1] = tf.transpose(
                        tf.reshape(part, [B, 2 * self.widths[lvl], F]), [1, 0, 2])
        row = tf.reshape(tf.one_hot(i, H, on_value=True, off_value=False), [1, H, 1, 1])
        new["image"] = tf.where(row, tf.transpose(pixels, [1, 0, 2])[:, None], st["image"])
        return new

    def _pixel_loop(self, t, packed, ul_us, w, noise, given_row, n_given):
        """The ul stream along a row of kind t, one position per step.

        packed: per level, (W_l, B, S) row-above parts; ul_us: (W_l, B, F) bottom rows of the
        transposed convs from the row before; noise: (W, B, .) per position; the first
        n_given positions take the pixels given_row (W, B, C) instead of drawn ones, and the
        next position and the caches read those. Returns per level the (W_l, B, S') records
        the next row needs (nl(x), nl(c1) of every conv, ...), and the row's pixels (W, B, C),
        float32.
        """
        B, W, R, F, dt = self.B, self.W, self.R, self.F, self.dtype
        levels = self._levels(t)

        def above_at(lvl, c):
            n_down = len(w["down_ul"][lvl])
            return tf.split(tf.gather(packed[lvl], c), [F] + [F, 2 * F] * (R + n_down), -1)

        def zeros_pend(lvl):
            pz = lambda: (tf.zeros((B, F), dt), tf.zeros((B, 2 * F), dt))
            return {"up": [pz() for _ in range(R)],
                    "down": [pz() for _ in range(len(w["down_ul"][lvl]))],
                    "first": tf.zeros((B, F), dt)}   # ul_init's right tap, or the stride-2's

        pend0 = [zeros_pend(lvl) for lvl in levels]
        # Per level the records; last, the pixels (float32 whatever the compute dtype).
        tas0 = [tf.TensorArray(dt, size=self.widths[lvl]) for lvl in levels]
        tas0.append(tf.TensorArray(tf.float32, size=W))

        def body(g, pend, tas):
            pend = [dict(p) for p in pend]
            tas = list(tas)
            carry0 = carry1 = None
            for s in range(4):
                j = 4 * g + s
                # ---- level 0, up pass
                ab0 = above_at(0, j)
                lst0, lst0_n, recs0, pend[0]["up"] = self._ul_up(
                    0, w, ab0[0] + pend[0]["first"], ab0[1:2 * R + 1], pend[0]["up"])
                extra0 = [lst0[R]] if t % 2 == 1 else []   # the next row downsamples this one
                if 1 in levels and s % 2 == 1:
                    pend[1]["first"] = tf.matmul(lst0[R], w["ds_ul"][0]["k10"])
                if 1 in levels and s % 2 == 0:
                    # ---- level 1 (even rows, even columns)
                    c1 = 2 * g + s // 2
                    ab1 = above_at(1, c1)
                    ds = ab1[0] + pend[1]["first"] + tf.matmul(lst0[R], w["ds_ul"][0]["k11"])
                    lst1, lst1_n, recs1, pend[1]["up"] = self._ul_up(
                        1, w, ds, ab1[1:2 * R + 1], pend[1]["up"])
                    extra1 = [lst1[R]] if t == 2 else []  # the next half row is a quarter row
                    if 2 in levels and s == 2:
                        pend[2]["first"] = tf.matmul(lst1[R], w["ds_ul"][1]["k10"])
                    if 2 in levels and s == 0:
                        # ---- level 2 (rows and columns multiples of 4)
                        ab2 = above_at(2, g)
                        ds2 = (ab2[0] + pend[2]["first"]
                               + tf.matmul(lst1[R], w["ds_ul"][1]["k11"]))
                        lst2, lst2_n, recs2, pend[2]["up"] = self._ul_up(
                            2, w, ds2, ab2[1:2 * R + 1], pend[2]["up"])
                        ul2, drecs2, pend[2]["down"] = self._ul_down(
                            2, w, lst2[R], lst2, lst2_n, ab2[2 * R + 1:], pend[2]["down"])
                        up = _dense(ul2, w["us_ul"][0])         # (B, 4F): the 2x2 block
                        carry1 = up[:, F:2 * F]                 # for the next level-1 step
                        tas[2] = tas[2].write(g, tf.concat(recs2 + drecs2 + [up[:, 2 * F:]],
                                                           -1))
                        start1 = up[:, :F]
                    elif 2 in levels:
                        start1 = carry1
                    else:
                        start1 = tf.gather(ul_us[1], c1)
                    ul1, drecs1, pend[1]["down"] = self._ul_down(
                        1, w, start1, lst1, lst1_n, ab1[2 * R + 1:], pend[1]["down"])
                    up = _dense(ul1, w["us_ul"][1])
                    carry0 = up[:, F:2 * F]
                    tas[1] = tas[1].write(c1, tf.concat(recs1 + drecs1 + extra1
                                                        + [up[:, 2 * F:]], -1))
                    start0 = up[:, :F]
                elif 1 in levels:
                    start0 = carry0
                else:
                    start0 = tf.gather(ul_us[0], j)
                # ---- level 0, down pass and the pixel
                ul0, drecs0, pend[0]["down"] = self._ul_down(
                    0, w, start0, lst0, lst0_n, ab0[2 * R + 1:], pend[0]["down"])
                pixel = self._head(w, ul0, [tf.gather(n, j) for n in noise])   # (B, C)
                pixel = tf.where(j < n_given, tf.gather(given_row, j), pixel)
                xpad = tf.concat([tf.cast(pixel, dt), tf.ones((B, 1), dt)], -1)
                pend[0]["first"] = tf.matmul(xpad, w["ul_init"]["r_cur"])
                tas[0] = tas[0].write(j, tf.concat(recs0 + drecs0 + extra0, -1))
                tas[-1] = tas[-1].write(j, pixel)
            return g + 1, pend, tas

        _, _, tas = tf.while_loop(lambda g, p, ta: g < W // 4, body,
                                  (tf.constant(0), pend0, tas0))
        stacked = [ta.stack() for ta in tas]
        return stacked[:-1], stacked[-1]

    # ------------------------------------------------------------------ driver
    def _four_rows(self, st, w, i0, noise, given, num_given):
        """Rows i0 .. i0 + 3 (i0 a multiple of 4); noise: (4, W, B, .) per position."""
        for r, kind in enumerate((0, 1, 2, 1)):     # rows 1 and 3 (mod 4) are computed alike
            st = self._row(kind, st, w, i0 + r, [n[r] for n in noise], given, num_given)
        return st

    def run(self, h, seed, progress, given, num_given):
        """The images; positions < num_given (raster order) are ``given``'s. Every row still
        runs the ul stream's loop (its caches are needed below), feeding the given pixels."""
        w = self._weights(h)
        st = self._initial_state()
        seed = tf.constant(seed, tf.int64)
        num_given = tf.constant(num_given, tf.int32)
        for i0 in range(0, self.H, 4):
            noise = _rows_noise(seed, tf.constant(i0), 4, self.W, self.B, self.M, self.C,
                                self.model.energy_distance)
            st = self._rows4(st, w, tf.constant(i0), noise, given, num_given)
            if progress is not None:
                progress(i0 + 4, self.H)
        return st["image"].numpy()


# ---------------------------------------------------------------------------- sample.py
def load_model_for_sampling(save_dir=None, tf1_checkpoint=None, model_config=None):
    """(model, ModelConfig) with the Polyak-averaged weights loaded, ready to sample.

    Either ``save_dir`` (a save_dir of train.py: the config is read from it), or
    ``tf1_checkpoint`` (an original TF1 checkpoint prefix, e.g. dir/params_cifar.ckpt, or its
    directory) together with the ``model_config`` it was trained with. The loader eval.py
    uses too (``checkpoint.load_for_inference``): the newest intact checkpoint of a save_dir,
    damaged newer ones renamed and reported.
    """
    from pixelcnn_pp import checkpoint
    return checkpoint.load_for_inference(save_dir, tf1_checkpoint, model_config,
                                         use_averages=True)


def sample_labels(labels, num_samples, num_classes):
    """The class of every image: (num_samples,) int, or None for an unconditional model.

    labels: None or "cycle" (image n gets class n mod K, as the original), or a list of class
    indices, repeated to num_samples (one label gives every image that class).
    """
    if not num_classes:
        if labels is not None and labels != "cycle":
            raise ValueError("this model is unconditional: it takes no --labels")
        return None
    if labels is None or labels == "cycle":
        return np.arange(num_samples) % num_classes
    labels = np.asarray([int(l) for l in labels])
    if labels.size == 0:
        raise ValueError("--labels is empty: give class indices, or 'cycle'")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(f"labels {sorted(set(bad.tolist()))} out of range: this model has "
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
        raise ValueError(f"num_samples and batch_size must be >= 1; got {num_samples}, "
                         f"{batch_size}")
    if not str(out).lower().endswith(".png"):
        raise ValueError(f"--out must name a .png file (the .npz goes beside it); got {out!r}")
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
        if hasattr(model, "weight_norm_layers"):
            x = sample(model, batch_size, image_shape, h=h, seed=batch_seed(seed, b),
                       method=method, jit_compile=jit_compile, progress=report)
        else:   # the PixelCNN baseline: its own exact sampler (unconditional)
            from pixelcnn_pp import baseline
            x = np.asarray(baseline.sample(model, batch_size, image_shape,
                                           seed=batch_seed(seed, b)))
            if report is not None:
                report(H, H)
        chunks.append(x)
    images = plotting.images_to_uint8(np.concatenate(chunks)[:num_samples])
    plotting.save_tile(out, images, max_images=100)
    arrays = {"images": images, "seed": np.int64(seed)}
    if y is not None:
        arrays["labels"] = y
    np.savez(str(out)[:-4] + ".npz", **arrays)
    return images, y


class ProgressBar:
    """A one-line progress bar on stderr: rows done and images per second."""

    def __init__(self, batch_size, height, stream=None, width=30):
        import sys
        self.images_per_row = batch_size / float(height)
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.time()

    def __call__(self, done, total):
        elapsed = max(time.time() - self.start, 1e-9)
        n = int(self.width * done / total)
        rate = done * self.images_per_row / elapsed
        self.stream.write(f"\r[{'#' * n}{'.' * (self.width - n)}] rows {done}/{total}  "
                          f"{rate:.3g} images/s  {elapsed:.0f}s")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()
