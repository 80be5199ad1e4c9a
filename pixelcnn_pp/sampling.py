"""Sampling from PixelCNN++: the original's naive loop, and an exact cached ("fast") sampler.

    images = sample(model, batch_size, image_shape=(H, W, 3), h=None, seed=0, method="fast")

**naive** is the original algorithm (SPEC.md §3): start from zeros and, for every pixel in
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

__all__ = ["sample", "position_noise", "energy_noise", "METHODS"]

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


@tf.function
def _row_noise(seed, i, width, batch_size, nr_mix, num_channels, energy):
    """The noise of every position of row i: (W, B, M), (W, B, C) and, for an energy-distance
    model, (W, B, 4). Drawn outside XLA, whose stateless RNG gives other numbers."""
    def body(j, tas):
        out = position_noise(seed, i, j, width, batch_size, nr_mix, num_channels)
        if energy:
            out += (energy_noise(seed, i, j, width, batch_size),)
        return j + 1, tuple(ta.write(j, o) for ta, o in zip(tas, out))

    tas = tuple(tf.TensorArray(tf.float32, size=width) for _ in range(3 if energy else 2))
    _, tas = tf.while_loop(lambda j, _: j < width, body, (tf.constant(0), tas))
    return tuple(ta.stack() for ta in tas)


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
      jit_compile: compile the per-row step with XLA (True / False); None picks the faster
        on CPU (see docs/SAMPLING.md).
      progress: optional callable progress(rows_done, H), called after every image row.

    Returns:
      float32 numpy array (B, H, W, C) in [-1, 1], not rounded to 8 bits (as the original;
      see ``pixelcnn_pp.plotting.images_to_uint8``). An energy-distance model samples each
      pixel through its own head (the first of its ten samples, as the original).
    """
    H, W, C = _check_args(model, batch_size, image_shape, h, method)
    if averages is not None:
        with averages.swap():
            return sample(model, batch_size, image_shape, h=h, seed=seed, method=method,
                          jit_compile=jit_compile, progress=progress)
    if jit_compile is None:
        jit_compile = _DEFAULT_JIT[method]
    sampler = _get_sampler(model, method, batch_size, H, W, h is not None, bool(jit_compile))
    if h is not None:
        h = tf.convert_to_tensor(np.asarray(h, np.float32))
    return sampler.run(h, int(seed), progress)


# Measured on CPU by benchmarks/sample_speed.py (see docs/SAMPLING.md).
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


class _NaiveSampler:
    """The original's loop: one full network pass per pixel, each row compiled as one loop."""

    def __init__(self, model, B, H, W, jit):
        self.model, self.B, self.H, self.W = model, B, H, W
        self.C = model.num_channels
        self._row = tf.function(self._row_fn, jit_compile=jit, reduce_retracing=True)

    def _row_fn(self, x, i, noise, h):
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

        _, x = tf.while_loop(lambda j, x: j < W, body, (tf.constant(0), x))
        return x

    def run(self, h, seed, progress):
        x = tf.zeros((self.B, self.H, self.W, self.C))
        seed = tf.constant(seed, tf.int64)
        for i in range(self.H):
            noise = _row_noise(seed, tf.constant(i), self.W, self.B, self.model.nr_logistic_mix,
                               self.C, self.model.energy_distance)
            x = self._row(x, tf.constant(i), noise, h)
            if progress is not None:
                progress(i + 1, self.H)
        return x.numpy()


# ---------------------------------------------------------------------------- fast
def _f32(v):
    return tf.cast(tf.convert_to_tensor(v), tf.float32)


def _dense_weights(layer):
    """A weight-normed dense / nin layer as a plain (Cin, F) matrix and bias."""
    V, g = _f32(layer.V), _f32(layer.g)
    return V * (g / tf.sqrt(tf.reduce_sum(tf.square(V), 0))), _f32(layer.b)


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


class _FastSampler:
    """Cached exact sampling. See the module docstring for the schedule.

    Levels 0, 1, 2 are the full, 1/2 and 1/4 resolutions. One compiled function per kind of
    row (i mod 4 decides which levels get new rows) carries the caches from row to row; a
    loop inside it steps over the columns, four at a time (j mod 4 decides which levels get
    a new position).
    """

    def __init__(self, model, B, H, W, jit):
        self.model, self.B, self.H, self.W = model, B, H, W
        self.C = model.num_channels
        self.R, self.F = model.nr_resnet, model.nr_filters
        self.M = model.nr_logistic_mix
        self.nl_name = model.resnet_nonlinearity
        self.nl = L.NONLINEARITIES[self.nl_name]
        self.Fn = 2 * self.F if self.nl_name == "concat_elu" else self.F   # channels of nl(u)
        self.widths = [W, W // 2, W // 4]
        self._rows = [tf.function(lambda *a, t=t: self._row(t, *a), jit_compile=jit)
                      for t in range(4)]

    # ------------------------------------------------------------------ weights
    def _blocks(self, kind):
        """(level, index within level, block) of 'up_u', 'up_ul', 'down_u' or 'down_ul'."""
        blocks = getattr(self.model, kind)
        R = self.R
        if kind.startswith("up"):
            return [[blocks[lvl * R + k] for k in range(R)] for lvl in range(3)]
        # The down pass runs at 1/4, 1/2, full resolution with R, R+1, R+1 blocks.
        quarter, half, full = blocks[:R], blocks[R:2 * R + 1], blocks[2 * R + 1:]
        return [full, half, quarter]

    def _weights(self, h):
        """Effective (weight-normalised) weights, computed once per sampling call."""
        m, F = self.model, self.F

        def conv(layer):
            return {"k": _f32(layer.kernel()), "b": _f32(layer.b)}

        def ul_conv(layer):   # 2x2 down-right conv: row i-1 taps, and [tap (1,1) | tap (1,0)]
            k = _f32(layer.kernel())
            return {"top": k[:1], "cur": tf.concat([k[1, 1], k[1, 0]], -1), "b": _f32(layer.b)}

        def hterm(blk):
            if h is None:
                return tf.zeros((1, 2 * F))
            return tf.matmul(h, _f32(blk.hw))                     # (B, 2F)

        def block(blk, a_split=False):
            d = {"conv1": None, "conv2": None, "h": hterm(blk)}
            if blk.nin_a is not None:
                w, b = _dense_weights(blk.nin_a)
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
        kd, kr = _f32(m.ul_init_down.kernel()), _f32(m.ul_init_right.kernel())
        w["ul_init"] = {"down": kd, "bd": _f32(m.ul_init_down.b), "r_top": kr[0, 0],
                        "r_cur": kr[1, 0], "br": _f32(m.ul_init_right.b)}
        w["ds_u"] = [conv(l) for l in m.downsample_u]
        w["ds_ul"] = []
        for layer in m.downsample_ul:
            k = _f32(layer.kernel())
            w["ds_ul"].append({"top": k[:1], "k10": k[1, 0], "k11": k[1, 1],
                               "b": _f32(layer.b)})
        # Transposed convs: the model's upsample_*[0] goes 1/4 -> 1/2 (into level 1).
        w["us_u"] = [conv(l) for l in m.upsample_u]
        w["us_ul"] = []
        for layer in m.upsample_ul:
            k = _f32(layer.kernel())                              # (2, 2, F, Cin)
            # Output (2r + a, 2c + b) = x(r, c) @ k[a, b]^T: one matmul for the 2x2 block,
            # columns ordered (0,0), (0,1), (1,0), (1,1).
            mats = [tf.transpose(k[a, b]) for a in range(2) for b in range(2)]
            w["us_ul"].append((tf.concat(mats, -1), tf.tile(_f32(layer.b), [4])))
        if m.energy_distance:
            w["head"] = {n: _dense_weights(getattr(m, n))
                         for n in ("ed_features", "ed_noise", "ed_hidden", "ed_out")}
        else:
            w["head"] = {"out": _dense_weights(m.out_nin)}
        return w

    # ------------------------------------------------------------------ state
    def _initial_state(self):
        B, F, Fn, R, Wd = self.B, self.F, self.Fn, self.R, self.widths
        z = lambda lvl, c: tf.zeros((B, Wd[lvl], c))
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
            "u_us": [tf.zeros((B, 2, Wd[0], F)), tf.zeros((B, 2, Wd[1], F))],
            "ul_us": [tf.zeros((Wd[0], B, F)), tf.zeros((Wd[1], B, F))],
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
        R, nl = self.R, self.nl
        levels = [0] if t % 2 else [0, 1] if t == 2 else [0, 1, 2]
        u_up, u_down = {}, {}
        for lvl in levels:
            if lvl == 0:       # down_shift(u_init(x_pad)): rows i-2, i-1; zeros on row 0
                u = self._row_conv(xp[:, 0], xp[:, 1], w["u_init"]) * tf.cast(i > 0, tf.float32)
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
            out.append((down[:, 0] + wi["bd"]) * tf.cast(i > 0, tf.float32)
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
        nl, F = self.nl, self.F
        xn = nl(x)
        y1 = tf.matmul(xn, wb["conv1"]["cur"])                           # (B, 2F)
        c1 = above[0] + pend[0] + y1[:, :F]
        if a_n is not None:
            c1 += tf.matmul(a_n, wb["a_ul"])
        c1n = nl(c1)
        y2 = tf.matmul(c1n, wb["conv2"]["cur"])                          # (B, 4F)
        c2 = above[1] + pend[1] + y2[:, :2 * F]
        out = x + c2[:, :F] * tf.sigmoid(c2[:, F:])
        return out, (xn, c1n), (y1[:, F:], y2[:, 2 * F:])

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
            f = _dense(f, hw["ed_features"]) + _dense(noise[2], hw["ed_noise"])
            f = _dense(L.concat_elu(f), hw["ed_hidden"])
            return tf.tanh(_dense(L.concat_elu(f), hw["ed_out"]))
        return _sample_pixel(_dense(f, hw["out"]), noise[:2], self.M, self.C)

    # ------------------------------------------------------------------ one row
    def _row(self, t, st, w, i, noise):
        """Row i (t = i mod 4, static) given the caches ``st``; returns the new caches."""
        B, H, W, C, R, F = self.B, self.H, self.W, self.C, self.R, self.F
        new = {k: list(v) if isinstance(v, list) else v for k, v in st.items()}
        # x_pad rows i-2 and i-1 (zeros, ones channel included, above the image)
        x_pad = tf.concat([st["image"], tf.ones_like(st["image"][..., :1])], -1)
        xp = tf.gather(tf.pad(x_pad, [[0, 0], [2, 0], [0, 0], [0, 0]]), tf.stack([i, i + 1]),
                       axis=1)                                        # (B, 2, W, C+1)

        levels, u_up, u_down = self._u_rows(t, st, w, new, xp, i)

        # Row-above parts of every ul conv, packed as (W_l, B, sum of F_k) per level so that
        # a step reads all of them with one gather and one split.
        packed, sizes = {}, {}
        for lvl in levels:
            parts = self._ul_above(lvl, st, w, u_up, u_down, xp, i)
            sizes[lvl] = [p.shape[-1] for p in parts]
            packed[lvl] = tf.transpose(tf.concat(parts, -1), [1, 0, 2])
        ul_us = [tf.identity(x) for x in st["ul_us"]]   # (W_l, B, F), rows from coarser levels

        def zeros_pend(lvl):
            n_down = len(w["down_ul"][lvl])
            pz = lambda: (tf.zeros((B, F)), tf.zeros((B, 2 * F)))
            return {"up": [pz() for _ in range(R)], "down": [pz() for _ in range(n_down)]}

        pend0 = {lvl: zeros_pend(lvl) for lvl in levels}
        pend0[0]["init"] = tf.zeros((B, F))
        if 1 in levels:
            pend0[1]["ds"] = tf.zeros((B, F))
        if 2 in levels:
            pend0[2]["ds"] = tf.zeros((B, F))
        tas0 = {lvl: tf.TensorArray(tf.float32, size=self.widths[lvl],
                                    element_shape=None, infer_shape=True) for lvl in levels}

        def above_at(lvl, c):
            return tf.split(tf.gather(packed[lvl], c), sizes[lvl], axis=-1)

        def body(g, pend, tas):
            pend = {lvl: dict(p) for lvl, p in pend.items()}
            tas = dict(tas)
            carry0 = carry1 = None
            for s in range(4):
                j = 4 * g + s
                # ---- level 0, up pass
                ab0 = above_at(0, j)
                start = ab0[0] + pend[0]["init"]
                lst0, lst0_n, recs0, p = self._ul_up(0, w, start, ab0[1:2 * R + 1],
                                                     pend[0]["up"])
                pend[0]["up"] = p
                extra0 = []
                if t % 2 == 1:                 # next row is even: it downsamples this one
                    extra0.append(lst0[R])
                if 1 in levels and s % 2 == 1:
                    pend[1]["ds"] = tf.matmul(lst0[R], w["ds_ul"][0]["k10"])
                if 1 in levels and s % 2 == 0:
                    c1 = 2 * g + s // 2
                    d = w["ds_ul"][0]
                    ab1 = above_at(1, c1)
                    ds = ab1[0] + pend[1]["ds"] + tf.matmul(lst0[R], d["k11"])
                    lst1, lst1_n, recs1, p = self._ul_up(1, w, ds, ab1[1:2 * R + 1],
                                                         pend[1]["up"])
                    pend[1]["up"] = p
                    extra1 = []
                    if t == 2:                 # next half row is a quarter row
                        extra1.append(lst1[R])
                    if 2 in levels and s == 2:
                        pend[2]["ds"] = tf.matmul(lst1[R], w["ds_ul"][1]["k10"])
                    if 2 in levels and s == 0:
                        d2 = w["ds_ul"][1]
                        ab2 = above_at(2, g)
                        ds2 = ab2[0] + pend[2]["ds"] + tf.matmul(lst1[R], d2["k11"])
                        lst2, lst2_n, recs2, p = self._ul_up(2, w, ds2, ab2[1:2 * R + 1],
                                                             pend[2]["up"])
                        pend[2]["up"] = p
                        ul2, drecs2, p = self._ul_down(2, w, lst2[R], lst2, lst2_n,
                                                       ab2[2 * R + 1:], pend[2]["down"])
                        pend[2]["down"] = p
                        up = _dense(ul2, w["us_ul"][0])               # (B, 4F): 2x2 block
                        carry1 = up[:, F:2 * F]                       # half-res (2q, 2p+1)
                        tas[2] = tas[2].write(g, tf.concat(recs2 + drecs2 + [up[:, 2 * F:]],
                                                           -1))
                        start1 = up[:, :F]
                    elif 2 in levels:
                        start1 = carry1
                    else:
                        start1 = tf.gather(ul_us[1], c1)
                    ul1, drecs1, p = self._ul_down(1, w, start1, lst1, lst1_n,
                                                   ab1[2 * R + 1:], pend[1]["down"])
                    pend[1]["down"] = p
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
                ul0, drecs0, p = self._ul_down(0, w, start0, lst0, lst0_n, ab0[2 * R + 1:],
                                               pend[0]["down"])
                pend[0]["down"] = p
                pixel = self._head(w, ul0, [tf.gather(n, j) for n in noise])   # (B, C)
                xpad = tf.concat([pixel, tf.ones((B, 1))], -1)
                pend[0]["init"] = tf.matmul(xpad, w["ul_init"]["r_cur"])
                tas[0] = tas[0].write(j, tf.concat(recs0 + drecs0 + extra0 + [pixel], -1))
            return g + 1, pend, tas

        _, _, tas = tf.while_loop(lambda g, p, ta: g < W // 4, body,
                                  (tf.constant(0), pend0, tas0))

        # ---- unpack this row's records into the caches for the next row
        Fn = self.Fn
        for lvl in levels:
            rows = tf.transpose(tas[lvl].stack(), [1, 0, 2])          # (B, W_l, S)
            n_down = len(w["down_ul"][lvl])
            split = [Fn] * (2 * R + 2 * n_down)
            extra = []
            if lvl == 0 and t % 2 == 1 or lvl == 1 and t == 2:
                extra.append("ds")
            if lvl > 0:
                extra.append("us")
            if lvl == 0:
                extra.append("pixel")
            widths = {"ds": F, "us": 2 * F, "pixel": C}
            parts = tf.split(rows, split + [widths[e] for e in extra], axis=-1)
            recs = parts[:len(split)]
            new["ul_up"][lvl] = [(recs[2 * k], recs[2 * k + 1]) for k in range(R)]
            new["ul_down"][lvl] = [(recs[2 * (R + k)], recs[2 * (R + k) + 1])
                                   for k in range(n_down)]
            for name, part in zip(extra, parts[len(split):]):
                if name == "ds":
                    new["ul_ds"][lvl] = part
                elif name == "us":    # (B, W_l, 2F) -> (W_{l-1}, B, F)
                    new["ul_us"][lvl - 1] = tf.transpose(
                        tf.reshape(part, [B, 2 * self.widths[lvl], F]), [1, 0, 2])
                else:
                    row = tf.reshape(tf.one_hot(i, H, on_value=True, off_value=False),
                                     [1, H, 1, 1])
                    new["image"] = tf.where(row, part[:, None], st["image"])
        return new

    # ------------------------------------------------------------------ driver
    def run(self, h, seed, progress):
        w = self._weights(h)
        st = self._initial_state()
        seed = tf.constant(seed, tf.int64)
        for i in range(self.H):
            noise = _row_noise(seed, tf.constant(i), self.W, self.B, self.M, self.C,
                               self.model.energy_distance)
            st = self._rows[i % 4](st, w, tf.constant(i), noise)
            if progress is not None:
                progress(i + 1, self.H)
        return st["image"].numpy()
