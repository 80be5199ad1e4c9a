"""The exact cached ("fast") sampler of ``sampling.sample(..., method="fast")``.

Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models": every
activation of the network is computed once, at the step where it first gets all of its
input, and what later steps read is cached. The schedule is described in ``sampling``'s
docstring and docs/SAMPLING.md. The sampler reads the model's own layout (``model.up``,
``model.down``, ``model.downsample``, ``model.upsample``: per-stage lists of (u, ul) pairs)
and holds each layer's effective weights in the small named structures below.
"""

import weakref
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from pixelcnn_pp import layers as L
from pixelcnn_pp.sampling import Sampler, rows_noise, sample_pixel

__all__ = ["FastSampler"]


# The effective (weight-normalised) weights of every layer, computed once per sampling call,
# as named tuples (tf.nest structures, passed into the compiled row functions).
class Dense(NamedTuple):
    """A weight-normed dense / nin layer as a plain matrix (Cin, F) and bias (F,)."""
    w: tf.Tensor
    b: tf.Tensor


class Conv(NamedTuple):
    """A down-shifted (2, 3) conv of the u stream, applied to two rows at once."""
    k: tf.Tensor                 # (2, 3, Cin, F)
    b: tf.Tensor


class ULConv(NamedTuple):
    """A (2, 2) down-right conv of the ul stream split by rows: the taps on row i-1 (applied
    to the whole row above) and, side by side, taps (1, 1) and (1, 0) on row i (the current
    position, and the next one's left neighbour)."""
    top: tf.Tensor               # (1, 2, Cin, F)
    cur: tf.Tensor               # (Cin, 2F): [tap (1, 1) | tap (1, 0)]
    b: tf.Tensor


class Block(NamedTuple):
    """One gated resnet: its two convs (Conv or ULConv), the class term h (B or 1, 2F) and
    the short-cut nin: ``a`` on the whole short-cut, or for the down pass's ul blocks, whose
    short-cut is concat([u, ul]), split into the rows for nl(u) (``a_u``, with the bias) and
    for nl(ul) (``a_ul``)."""
    conv1: object
    conv2: object
    h: tf.Tensor
    a: Optional[Dense] = None
    a_u: Optional[Dense] = None
    a_ul: Optional[tf.Tensor] = None


class ULInit(NamedTuple):
    """The ul stream's first layers: a down-shifted (1, 3) conv of the row above (``down``,
    ``bd``) plus a right-shifted (2, 1) conv (taps ``r_top`` on the row above, ``r_cur`` on
    the left neighbour, bias ``br``)."""
    down: tf.Tensor
    bd: tf.Tensor
    r_top: tf.Tensor
    r_cur: tf.Tensor
    br: tf.Tensor


class StridedULConv(NamedTuple):
    """The stride-2 (2, 2) down-right conv into the next coarser ul level: taps on the row
    above, and taps (1, 0), (1, 1) on the current row."""
    top: tf.Tensor
    k10: tf.Tensor
    k11: tf.Tensor
    b: tf.Tensor


class Head(NamedTuple):
    """The output layer: the mixture parameters (``out``) or the energy-distance head."""
    out: Optional[Dense] = None
    ed_features: Optional[Dense] = None
    ed_noise: Optional[Dense] = None
    ed_hidden: Optional[Dense] = None
    ed_out: Optional[Dense] = None


class Weights(NamedTuple):
    """Per level (full, 1/2, 1/4 resolution), the Blocks of the four block lists; the first
    layers; the strided convs into levels 1, 2 (``ds_*``) and the transposed convs from
    levels 2, 1 (``us_*``; ``us_ul`` as one Dense emitting a 2x2 block); the head."""
    up_u: list
    up_ul: list
    down_u: list
    down_ul: list
    u_init: Conv
    ul_init: ULInit
    ds_u: list
    ds_ul: list
    us_u: list
    us_ul: list
    head: Head


def _f32(v):
    return tf.cast(tf.convert_to_tensor(v), tf.float32)


def _dense_weights(layer, dtype=tf.float32):
    """A weight-normed dense / nin layer as a Dense, normalised in float32 and cast to
    ``dtype``."""
    V, g = _f32(layer.V), _f32(layer.g)
    w = V * (g / tf.sqrt(tf.reduce_sum(tf.square(V), 0)))
    return Dense(tf.cast(w, dtype), tf.cast(_f32(layer.b), dtype))


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


class FastSampler(Sampler):
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
        (full, 1/2, 1/4 resolution): the model's stages, the down pass's (which runs from
        1/4 to full resolution) in reverse."""
        pass_, stream = kind.split("_")
        stages = self.model.up if pass_ == "up" else self.model.down[::-1]
        return [[pair[0 if stream == "u" else 1] for pair in stage] for stage in stages]

    def _weights(self, h):
        """The model's effective weights as ``Weights``, computed once per sampling call."""
        m, F, dt = self.model, self.F, self.dtype

        def c(v):             # float32 weights (normalised in float32) -> the compute dtype
            return tf.cast(_f32(v), dt)

        def conv(layer):
            return Conv(c(layer.kernel()), c(layer.b))

        def ul_conv(layer):
            k = c(layer.kernel())
            return ULConv(k[:1], tf.concat([k[1, 1], k[1, 0]], -1), c(layer.b))

        def block(blk, conv_fn, a_split=False):
            h_term = (tf.zeros((1, 2 * F), dt) if h is None
                      else tf.matmul(tf.cast(h, dt), c(blk.hw)))         # (B, 2F)
            out = Block(conv_fn(blk.conv1), conv_fn(blk.conv2), h_term)
            if blk.nin_a is None:
                return out
            a = _dense_weights(blk.nin_a, dt)
            if not a_split:
                return out._replace(a=a)
            iu, iul = _concat_rows(self.nl_name, F)   # a = concat([u, ul]): u known per row
            return out._replace(a_u=Dense(tf.gather(a.w, iu), a.b), a_ul=tf.gather(a.w, iul))

        def blocks(kind, conv_fn):
            return [[block(b, conv_fn, a_split=kind == "down_ul") for b in level]
                    for level in self._blocks(kind)]

        kd, kr = c(m.ul_init_down.kernel()), c(m.ul_init_right.kernel())
        ds_ul = []
        for _, layer in m.downsample:
            k = c(layer.kernel())
            ds_ul.append(StridedULConv(k[:1], k[1, 0], k[1, 1], c(layer.b)))
        us_ul = []
        for _, layer in m.upsample:      # upsample[0] goes 1/4 -> 1/2 (into level 1)
            k = c(layer.kernel())                                 # (2, 2, F, Cin)
            # Output (2r + a, 2c + b) = x(r, c) @ k[a, b]^T: one matmul for the 2x2 block,
            # columns ordered (0,0), (0,1), (1,0), (1,1).
            mats = [tf.transpose(k[a, b]) for a in range(2) for b in range(2)]
            us_ul.append(Dense(tf.concat(mats, -1), tf.tile(c(layer.b), [4])))
        if m.energy_distance:
            head = Head(**{n: _dense_weights(getattr(m, n), dt)
                           for n in ("ed_features", "ed_noise", "ed_hidden", "ed_out")})
        else:
            head = Head(out=_dense_weights(m.out_nin, dt))
        return Weights(
            up_u=blocks("up_u", conv), up_ul=blocks("up_ul", ul_conv),
            down_u=blocks("down_u", conv), down_ul=blocks("down_ul", ul_conv),
            u_init=conv(m.u_init),
            ul_init=ULInit(kd, c(m.ul_init_down.b), kr[0, 0], kr[1, 0], c(m.ul_init_right.b)),
            ds_u=[conv(u) for u, _ in m.downsample], ds_ul=ds_ul,
            us_u=[conv(u) for u, _ in m.upsample], us_ul=us_ul, head=head)

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
        y = tf.nn.conv2d(x, wk.k, [1, 1, stride, 1], [[0, 0], [0, 0], [1, 1], [0, 0]])
        return y[:, 0] + wk.b

    @staticmethod
    def _top_conv(prev, top, stride=1):
        """Taps on row i-1 of a (2, 2) down-right conv: (B, W, C) -> (B, W/stride, F)."""
        y = tf.nn.conv2d(prev[:, None], top, [1, 1, stride, 1], [[0, 0], [0, 0], [1, 0], [0, 0]])
        return y[:, 0]

    def _u_block(self, wb, x, prev, a=None):
        """One gated resnet of the u stream on a whole row: x (B, W, F) -> (B, W, F)."""
        nl, F = self.nl, self.F
        xn = nl(x)
        c1 = self._row_conv(prev[0], xn, wb.conv1)
        if a is not None:
            c1 += _dense(nl(a), wb.a)
        c1n = nl(c1)
        c2 = self._row_conv(prev[1], c1n, wb.conv2) + wb.h[:, None, :]
        return x + c2[..., :F] * tf.sigmoid(c2[..., F:]), (xn, c1n)

    def _deconv_u(self, x, wk):
        """Down-shifted (2, 3) stride-2 transposed conv of one row: (B, W, F) -> (B, 2, 2W, F)."""
        B, Wc, _ = x.shape
        y = tf.nn.conv2d_transpose(x[:, None], wk.k, [B, 3, 2 * Wc + 2, self.F],
                                   [1, 2, 2, 1], padding="VALID")
        return y[:, :2, 1:2 * Wc + 1] + wk.b

    def _u_rows(self, t, st, w, new, xp, i):
        """The u stream at row i on every level that gets a new row. Returns the up-pass
        rows u_up[level] (R + 1 of them) and the down-pass rows u_down[level]."""
        R = self.R
        levels = self._levels(t)
        u_up, u_down = {}, {}
        for lvl in levels:
            if lvl == 0:       # down_shift(u_init(x_pad)): rows i-2, i-1; zeros on row 0
                u = self._row_conv(xp[:, 0], xp[:, 1], w.u_init) * tf.cast(i > 0, self.dtype)
            else:
                u = self._row_conv(st["u_ds"][lvl - 1], u_up[lvl - 1][R], w.ds_u[lvl - 1], 2)
            rows, prevs = [u], []
            for k in range(R):
                u, p = self._u_block(w.up_u[lvl][k], u, st["u_up"][lvl][k])
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
                u, p = self._u_block(w.down_u[lvl][k], u, st["u_down"][lvl][k],
                                     a=a_rows[-1 - k])
                rows.append(u)
                prevs.append(p)
            u_down[lvl] = rows
            new["u_down"][lvl] = prevs
            if lvl > 0:        # two rows of the next finer level
                new["u_us"][lvl - 1] = self._deconv_u(u, w.us_u[2 - lvl])
        return levels, u_up, u_down

    def _ul_above(self, lvl, st, w, u_up, u_down, xp, i):
        """Everything the ul-stream convs of one level get from the row above (and from the
        u stream, biases and labels), for the whole row: a list of (B, W_l, F_k)."""
        nl, R = self.nl, self.R
        out = []
        if lvl == 0:
            wi = w.ul_init
            prev = xp[:, 1]                                            # x_pad row i-1
            down = tf.nn.conv2d(prev[:, None], wi.down, 1, [[0, 0], [0, 0], [1, 1], [0, 0]])
            out.append((down[:, 0] + wi.bd) * tf.cast(i > 0, self.dtype)
                       + _shift_right(_dense(prev, (wi.r_top, wi.br))))
        else:
            d = w.ds_ul[lvl - 1]
            out.append(self._top_conv(st["ul_ds"][lvl - 1], d.top, 2) + d.b)
        for k in range(R):
            wb, prev = w.up_ul[lvl][k], st["ul_up"][lvl][k]
            out.append(self._top_conv(prev[0], wb.conv1.top) + wb.conv1.b
                       + _dense(nl(u_up[lvl][k + 1]), wb.a))
            out.append(self._top_conv(prev[1], wb.conv2.top) + wb.conv2.b
                       + wb.h[:, None, :])
        for k, wb in enumerate(w.down_ul[lvl]):
            prev = st["ul_down"][lvl][k]
            out.append(self._top_conv(prev[0], wb.conv1.top) + wb.conv1.b
                       + _dense(nl(u_down[lvl][k]), wb.a_u))
            out.append(self._top_conv(prev[1], wb.conv2.top) + wb.conv2.b
                       + wb.h[:, None, :])
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
        y1, next1 = tf.split(tf.matmul(xn, wb.conv1.cur), 2, axis=1)     # (B, F) x 2
        terms = [above[0], pend[0], y1]
        if a_n is not None:
            terms.append(tf.matmul(a_n, wb.a_ul))
        c1n = nl(tf.add_n(terms))
        y2, next2 = tf.split(tf.matmul(c1n, wb.conv2.cur), 2, axis=1)    # (B, 2F) x 2
        a, b = tf.split(tf.add_n([above[1], pend[1], y2]), 2, axis=1)
        return x + a * tf.sigmoid(b), (xn, c1n), (next1, next2)

    def _ul_up(self, lvl, w, start, above, pend):
        """The up pass of one level at one position. Returns the level's ul list (R + 1),
        nl() of its first R entries, records and pendings."""
        ul, lst, lst_n, recs, pends = start, [start], [], [], []
        for k in range(self.R):
            ul, rec, p = self._ul_block(w.up_ul[lvl][k], ul, above[2 * k:2 * k + 2],
                                        pend[k])
            lst.append(ul)
            lst_n.append(rec[0])
            recs += rec
            pends.append(p)
        return lst, lst_n, recs, pends

    def _ul_down(self, lvl, w, start, lst, lst_n, above, pend):
        """The down pass of one level at one position; ``lst`` is that level's up-pass list."""
        ul, recs, pends = start, [], []
        n = len(w.down_ul[lvl])
        a_ns = list(lst_n)
        if n == self.R + 1:
            a_ns.append(self.nl(lst[self.R]))
        for k in range(n):
            ul, rec, p = self._ul_block(w.down_ul[lvl][k], ul, above[2 * k:2 * k + 2],
                                        pend[k], a_n=a_ns[-1 - k])
            recs += rec
            pends.append(p)
        return ul, recs, pends

    def _head(self, w, ul, noise):
        """(B, F) -> the sampled pixel (B, C); noise: this position's (u_mix, u[, ed])."""
        m, hw = self.model, w.head
        f = tf.nn.elu(ul)
        if m.energy_distance:
            f = (_dense(f, hw.ed_features)
                 + _dense(tf.cast(noise[2], self.dtype), hw.ed_noise))
            f = _dense(L.concat_elu(f), hw.ed_hidden)
            return tf.tanh(tf.cast(_dense(L.concat_elu(f), hw.ed_out), tf.float32))
        # The mixture parameters are sampled from in float32 (as the model's likelihood).
        return sample_pixel(tf.cast(_dense(f, hw.out), tf.float32), noise[:2], self.M,
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
        B, H, R, F = self.B, self.H, self.R, self.F
        new = {k: list(v) if isinstance(v, list) else v for k, v in st.items()}
        xp = self._image_rows_above(st["image"], i)
        levels, u_up, u_down = self._u_rows(t, st, w, new, xp, i)
        # Row-above parts of every ul conv, packed as (W_l, B, sum of F_k) per level so that
        # a step reads all of them with one gather and one split.
        packed = [tf.transpose(tf.concat(self._ul_above(lvl, st, w, u_up, u_down, xp, i), -1),
                               [1, 0, 2]) for lvl in levels]
        wl = w._replace(up_u=[], down_u=[], ds_u=[], us_u=[], u_init=None)  # the ul stream's
        given_row = tf.transpose(tf.gather(given, i, axis=1), [1, 0, 2])     # (W, B, C)
        n_given = tf.clip_by_value(num_given - i * self.W, 0, self.W)    # of this row
        records, pixels = self._loops[t](packed, st["ul_us"], wl, noise, given_row, n_given)

        # ---- unpack this row's records into the caches for the next row
        Fn = self.Fn
        for lvl, rows in zip(levels, records):
            rows = tf.transpose(rows, [1, 0, 2])                      # (B, W_l, S)
            n_down = len(w.down_ul[lvl])
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
            n_down = len(w.down_ul[lvl])
            return tf.split(tf.gather(packed[lvl], c), [F] + [F, 2 * F] * (R + n_down), -1)

        def zeros_pend(lvl):
            pz = lambda: (tf.zeros((B, F), dt), tf.zeros((B, 2 * F), dt))
            return {"up": [pz() for _ in range(R)],
                    "down": [pz() for _ in range(len(w.down_ul[lvl]))],
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
                    pend[1]["first"] = tf.matmul(lst0[R], w.ds_ul[0].k10)
                if 1 in levels and s % 2 == 0:
                    # ---- level 1 (even rows, even columns)
                    c1 = 2 * g + s // 2
                    ab1 = above_at(1, c1)
                    ds = ab1[0] + pend[1]["first"] + tf.matmul(lst0[R], w.ds_ul[0].k11)
                    lst1, lst1_n, recs1, pend[1]["up"] = self._ul_up(
                        1, w, ds, ab1[1:2 * R + 1], pend[1]["up"])
                    extra1 = [lst1[R]] if t == 2 else []  # the next half row is a quarter row
                    if 2 in levels and s == 2:
                        pend[2]["first"] = tf.matmul(lst1[R], w.ds_ul[1].k10)
                    if 2 in levels and s == 0:
                        # ---- level 2 (rows and columns multiples of 4)
                        ab2 = above_at(2, g)
                        ds2 = (ab2[0] + pend[2]["first"]
                               + tf.matmul(lst1[R], w.ds_ul[1].k11))
                        lst2, lst2_n, recs2, pend[2]["up"] = self._ul_up(
                            2, w, ds2, ab2[1:2 * R + 1], pend[2]["up"])
                        ul2, drecs2, pend[2]["down"] = self._ul_down(
                            2, w, lst2[R], lst2, lst2_n, ab2[2 * R + 1:], pend[2]["down"])
                        up = _dense(ul2, w.us_ul[0])         # (B, 4F): the 2x2 block
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
                    up = _dense(ul1, w.us_ul[1])
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
                pend[0]["first"] = tf.matmul(xpad, w.ul_init.r_cur)
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
            noise = rows_noise(seed, tf.constant(i0), 4, self.W, self.B, self.M, self.C,
                                self.model.energy_distance)
            st = self._rows4(st, w, tf.constant(i0), noise, given, num_given)
            if progress is not None:
                progress(i0 + 4, self.H)
        return st["image"].numpy()
