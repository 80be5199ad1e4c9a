"""The exact cached ("fast") sampler of ``sampling.sample(..., method="fast")``.

Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models": every
activation of the network is computed once, at the step where it first gets all of its
input, and what later steps read is cached. The sampler reads the model's layout (its levels,
see ``fast_weights``) from ``model.up``, ``model.down``, ``model.downsample`` and
``model.upsample``; docs/SAMPLING.md draws the schedule.

* The ``u`` stream (rows above) at row i depends only on image rows < i: at the start of each
  row it is computed for the whole row, from the row itself and the cached previous row of
  every conv's input (down-shifted convs read two rows). Level l (1/2**l resolution) gets a
  new row on the rows i that are multiples of 2**l; a transposed conv emits two rows of the
  finer level at once, the second cached for its next row.
* The ``ul`` stream (rows above and pixels to the left) at (i, j) depends on rows < i and
  pixels (i, < j): it advances one position per step. Its 2x2 down-right convs are split by
  rows: the taps on row i-1 are applied to the whole previous row at the start of the row
  (with the biases, the class term and everything the ``u`` stream feeds in), the taps on
  row i per pixel: the current value through tap (1, 1) and, for the next position, through
  tap (1, 0). Level l steps on the columns j that are multiples of 2**l of its rows: its up
  pass, then (on the positions where it has one) the coarser level's step, recursively, then
  its down pass. A transposed conv emits a 2x2 block of the finer level, of which the right
  pixel is used on the finer level's next step and the bottom row is cached for its next row.

The head (mixture, categorical over codes, energy distance) is ``head.Head``'s. Any H, W: the
sampler runs on the model's padded size (multiples of 4) but only on the image's rows, and
multiplies by the column masks where ``PixelCNNPP._forward`` multiplies by its masks (the
padded columns' values stay zero, never drawn). The spatial condition's features are computed
once per batch and added, a row at a time, where each gated resnet adds ``nin_s``.
"""

import weakref
from typing import NamedTuple

import tensorflow as tf

from pixelcnn_pp import layers as L
from pixelcnn_pp.sampling import traces
from pixelcnn_pp.sampling.fast_weights import Weights, dense, read_weights
from pixelcnn_pp.sampling.head import Head

__all__ = ["FastSampler"]


class Pending(NamedTuple):
    """What a ul level's position leaves for its next position: tap (1, 0) of every conv
    applied to the current value. ``first`` (B, F): of the level's first layer (at full
    resolution ul_init's right-shifted conv, applied to the pixel; below it the stride-2 conv
    from the finer level, applied by that level); ``up``, ``down``: per gated resnet of each
    pass, (conv1's (B, F), conv2's (B, 2F))."""
    first: tf.Tensor
    up: list
    down: list


class _Loop(NamedTuple):
    """One step of the pixel loop along a row: the row's inputs (see ``_pixel_loop``), the
    step g, and what the levels' steps update in place: per level the Pending and the
    records' TensorArray, and ``carry``: per level the right pixel of the 2x2 block the
    coarser level emitted, for the level's next position."""
    n: int
    g: tf.Tensor
    packed: list
    ul_us: list
    w: Weights
    pend: list
    tas: list
    carry: dict


def _masked(x, m):
    """x times a position's column mask m, or x when m is None (no padded columns)."""
    return x if m is None else x * m


def _shift_right(x):
    """(B, W, C): drop the last column, prepend zeros."""
    return tf.pad(x[:, :-1], [[0, 0], [1, 0], [0, 0]])


class FastSampler:
    """Cached exact sampling of B images (or code maps) of H x W, at a ``temperature``. See
    the module docstring for the schedule.

    Levels 0 .. n_levels-1 are the resolutions 1, 1/2, 1/4. Row i is computed by ``_row`` for
    the number n of levels that get a new row on it: the row-level part, then a loop over the
    columns, G = 2**(n_levels-1) at a time (one position of the coarsest level per step), then the
    caches for the next row. One compiled call runs G rows (a call's overhead grows with the
    hundreds of cached tensors it carries).

    Precision: the network runs in the model's compute dtype (bfloat16 or float16 under a
    Keras mixed-precision policy, as the naive sampler's passes): weights normalised in
    float32, then cast; activations and caches in the compute dtype. The sampled pixels, the
    image and the likelihood's sampling step stay float32.
    """

    def __init__(self, model, B, H, W, jit, temperature=1.0):
        self._model, self.B = weakref.ref(model), B
        self.head = Head(model, temperature)
        self.C = self.head.C
        self.dtype = tf.as_dtype(model.compute_dtype)
        self.F, self.M = model.nr_filters, model.nr_logistic_mix
        self.nl = L.NONLINEARITIES[model.resnet_nonlinearity]
        self.Fn = 2 * self.F if model.resnet_nonlinearity == "concat_elu" else self.F  # nl(u)
        # The layout, per level (full resolution first): gated resnets of the up and down pass.
        self.n_levels = len(model.up)
        self.n_up = [len(stage) for stage in model.up]
        self.n_down = [len(stage) for stage in reversed(model.down)]
        # The down pass pops the short-cuts its level's up pass pushed (its first layer's
        # output and every block's), but for the coarsest level's last, its starting point.
        assert all(d == u + (l < self.n_levels - 1) for l, (u, d) in
                   enumerate(zip(self.n_up, self.n_down))), (self.n_up, self.n_down)
        self.G = 2 ** (self.n_levels - 1)
        # The image's size, and the padded one (self.H, self.W) the network runs on.
        self.hw = (H, W)
        self.H, self.W = -(-H // self.G) * self.G, -(-W // self.G) * self.G
        self.widths = [self.W >> l for l in range(self.n_levels)]
        # Per level, the columns of the image (the rest is padding); the rows the sampler
        # computes all are the image's.
        self.valid = [-(-W // 2 ** l) for l in range(self.n_levels)]
        self.padded = W != self.W
        # jit: XLA compiles each group of rows whole (its row-level part and pixel loops):
        # one function per number of rows in a group, of the flat list of its input tensors
        # (so that it can be kept on disk, ``traces.py``), made on first use.
        self.jit, self._groups = bool(jit), {}
        self._settings = (type(self).__name__, self.B, self.hw, self.C, self.n_up, self.n_down,
                          self.F, self.M, model.resnet_nonlinearity, self.head.kind, self.head.K,
                          self.head.temperature, self.dtype.name, self.jit)
        # One loop function per kind of row (how many levels get a new row).
        self._loops = {n: tf.function(lambda *a, n=n: self._pixel_loop(n, *a),
                                      jit_compile=jit, autograph=False)
                       for n in range(1, self.n_levels + 1)}

    @property
    def model(self):
        """The model, held by a weak reference: samplers are cached per model and must not
        keep it alive."""
        return self._model()

    # ------------------------------------------------------------------ driver
    def run(self, h, seed, progress, given, num_given, spatial=None):
        """The canvas (B, H, W, C), float32 numpy; positions < num_given (raster order) are
        ``given``'s (B, H, W, C). Every row still runs the ul stream's loop (its caches are
        needed below), feeding the given values. h: (B, h_dim) or None; spatial: (B, Hs, Ws,
        Ds) or None."""
        model, (H, W) = self.model, self.hw
        conds = None
        if spatial is not None:
            conds = model._condition_features(tf.cast(spatial, model.compute_dtype),
                                              (self.H, self.W), (H, W))
        w = read_weights(model, h, self.dtype, conds)
        st = self._initial_state()
        given = tf.pad(given, [[0, 0], [0, self.H - H], [0, self.W - W], [0, 0]])
        seed = tf.constant(seed, tf.int64)
        num_given = tf.constant(num_given, tf.int32)
        store = traces.store_for(model)
        for i0 in range(0, H, self.G):
            rows = min(self.G, H - i0)            # never the padding's rows
            noise = self.head.noise(seed, tf.constant(i0), rows, W, self.B)
            # The padded columns' noise is never used (their values are set to zero).
            noise = [tf.pad(n, [[0, 0], [0, self.W - W], [0, 0], [0, 0]], constant_values=0.5)
                     for n in noise]
            st = self._group(rows, (st, w, tf.constant(i0), noise, given, num_given), store)
            if progress is not None:
                progress(i0 + rows, H)
        return st["image"].numpy()[:, :H, :W]

    def _group(self, rows, args, store):
        """The caches after the group of ``rows`` rows from args = (st, w, i0, noise, given,
        num_given), by the traced function of ``_row_group`` of the flat input tensors: made
        on first use, loaded from the model's kept traces (``store``) if they have it, else
        traced and kept there."""
        tensors, pack = traces.flat_inputs(args)
        fn = self._groups.get(rows)
        if fn is None:
            key = traces.input_key(self._settings + (rows,), args)
            fn = store.load(key) if store is not None else None
            if fn is None:
                fn = tf.function(lambda *t: tf.nest.flatten(self._row_group(*pack(t), rows)),
                                 input_signature=[tf.TensorSpec(t.shape, t.dtype)
                                                  for t in tensors],
                                 jit_compile=self.jit, autograph=False)
                if store is not None:
                    store.save(key, fn)           # traces it
            self._groups[rows] = fn
        return tf.nest.pack_sequence_as(args[0], fn(*tensors))

    def _row_group(self, st, w, i0, noise, given, num_given, rows):
        """Rows i0 .. i0 + rows - 1 (i0 a multiple of G, rows <= G static); noise: (rows, W,
        B, .) per position."""
        for r in range(rows):
            st = self._row(self._levels_on_row(r), st, w, i0 + r, [n[r] for n in noise],
                           given, num_given)
        return st

    def _levels_on_row(self, i):
        """How many levels get a new row on row i: level l does on multiples of 2**l."""
        n = 1
        while n < self.n_levels and i % 2 ** n == 0:
            n += 1
        return n

    def _initial_state(self):
        """The caches before row 0: zeros, as the padding above the image. ``image`` (B, H,
        W, C) float32; per level l, rows (B, W_l, .) in the compute dtype:
          u_up, ul_up [l][k]: the previous row of (nl(x), nl(c1)) of up-pass block k;
          u_down, ul_down [l][k]: the same for the down pass;
          u_ds, ul_ds [l]: the previous row of the level's last up-pass output, which the
            stride-2 conv into level l + 1 reads;
          u_us [l]: (B, 2, W_l, F), the two rows the transposed conv from level l + 1 emitted;
          ul_us [l]: (W_l, B, F), the bottom row of the 2x2 blocks it emitted.
        """
        B, F, Fn, dt, Wd = self.B, self.F, self.Fn, self.dtype, self.widths
        z = lambda l, c: tf.zeros((B, Wd[l], c), dt)
        pairs = lambda l, n: [(z(l, Fn), z(l, Fn)) for _ in range(n)]
        coarser = range(self.n_levels - 1)        # levels that have a coarser one
        return {
            "image": tf.zeros((B, self.H, self.W, self.C)),
            "u_up": [pairs(l, n) for l, n in enumerate(self.n_up)],
            "u_down": [pairs(l, n) for l, n in enumerate(self.n_down)],
            "ul_up": [pairs(l, n) for l, n in enumerate(self.n_up)],
            "ul_down": [pairs(l, n) for l, n in enumerate(self.n_down)],
            "u_ds": [z(l, F) for l in coarser],
            "ul_ds": [z(l, F) for l in coarser],
            "u_us": [tf.zeros((B, 2, Wd[l], F), dt) for l in coarser],
            "ul_us": [tf.zeros((Wd[l], B, F), dt) for l in coarser],
        }

    # ------------------------------------------------------------------ one row
    def _row(self, n, st, w, i, noise, given, num_given):
        """Row i, on which levels 0 .. n-1 get a new row (n static), given the caches ``st``;
        returns the new caches. noise: (W, B, .) per position of the row; the positions
        < num_given (raster order) take ``given``'s pixels (B, H, W, C) instead of drawn
        ones."""
        new, packed = self._row_above(n, st, w, i)
        given_row = tf.transpose(tf.gather(given, i, axis=1), [1, 0, 2])     # (W, B, C)
        n_given = tf.clip_by_value(num_given - i * self.hw[1], 0, self.hw[1])   # of this row
        records, pixels = self._loops[n](packed, st["ul_us"], w.ul_stream(), noise,
                                         given_row, n_given)
        for l in range(n):
            self._unpack_records(l, n, records[l], new)
        row = tf.reshape(tf.one_hot(i, self.H, on_value=True, off_value=False),
                         [1, self.H, 1, 1])
        new["image"] = tf.where(row, tf.transpose(pixels, [1, 0, 2])[:, None], st["image"])
        return new

    def _unpack_records(self, l, n, records, new):
        """Level l's records of a row (W_l, B, S), as ``_pixel_loop`` wrote them, into the
        caches ``new`` for the next row."""
        B, F, Fn = self.B, self.F, self.Fn
        records = tf.transpose(records, [1, 0, 2])                           # (B, W_l, S)
        n_recs = 2 * (self.n_up[l] + self.n_down[l])
        has_ds, has_us = l == n - 1 and n < self.n_levels, l > 0
        parts = tf.split(records, [Fn] * n_recs + [F] * has_ds + [2 * F] * has_us, axis=-1)
        recs = list(zip(parts[0:n_recs:2], parts[1:n_recs:2]))
        new["ul_up"][l], new["ul_down"][l] = recs[:self.n_up[l]], recs[self.n_up[l]:]
        if has_ds:
            new["ul_ds"][l] = parts[n_recs]
        if has_us:            # (B, W_l, 2F) -> (W_{l-1}, B, F)
            new["ul_us"][l - 1] = tf.transpose(
                tf.reshape(parts[-1], [B, 2 * self.widths[l], F]), [1, 0, 2])

    # ------------------------------------------------------------------ row level
    def _row_above(self, n, st, w, i):
        """The row-level part of row i: the u stream on levels 0 .. n-1, and what every ul
        conv of those levels gets from the row above. Returns a copy of the caches with the
        u stream's updated, and per level the row-above parts packed as (W_l, B, S), so that
        a step of the pixel loop reads all of them with one gather and one split."""
        new = {k: list(v) if isinstance(v, list) else v for k, v in st.items()}
        xp = self._image_rows_above(st["image"], i)
        u_up, u_down = self._u_rows(n, st, w, new, xp, i)
        packed = [tf.transpose(tf.concat(self._ul_above(l, st, w, u_up, u_down, xp, i), -1),
                               [1, 0, 2]) for l in range(n)]
        return new, packed

    def _image_rows_above(self, image, i):
        """x_pad rows i-2 and i-1 (zeros above the image and in the padded columns, ones
        channel included) in the compute dtype: (B, 2, W, Cin+1)."""
        rows = tf.stack([i - 2, i - 1])
        values = tf.gather(image, tf.maximum(rows, 0), axis=1)            # (B, 2, W, C)
        x = self.head.inputs(values, self.dtype)
        x = tf.concat([x, tf.ones_like(x[..., :1])], -1)
        above = tf.cast(rows >= 0, self.dtype)[None, :, None, None]
        return self._col_mask(x * above, 0)

    def _col_mask(self, x, l):
        """x (B, [rows,] W_l, C) times level l's column mask (``PixelCNNPP._masks``)."""
        if not self.padded:
            return x
        cols = tf.cast(tf.range(self.widths[l]) < self.valid[l], x.dtype)
        return x * tf.reshape(cols, [-1, 1])

    def _s_term(self, w, wb, l, i):
        """The spatial condition's term of block wb at level l on image row i: (B, W_l, 2F),
        or 0 without a spatial condition."""
        if w.conds is None:
            return 0.0
        return dense(tf.gather(w.conds[l], i // 2 ** l, axis=1), wb.s)

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

    def _u_block(self, wb, x, prev, l, s, a=None):
        """One gated resnet of the u stream on a whole row of level l: x (B, W, F) ->
        (B, W, F), and its records (nl(x), nl(c1)) for the next row; prev: those of the row
        before; s: its spatial term."""
        nl, F = self.nl, self.F
        xn = nl(x)
        c1 = self._row_conv(prev[0], xn, wb.conv1)
        if a is not None:
            c1 += dense(nl(a), wb.a)
        c1n = self._col_mask(nl(c1), l)
        c2 = self._row_conv(prev[1], c1n, wb.conv2) + wb.h[:, None, :] + s
        return self._col_mask(x + c2[..., :F] * tf.sigmoid(c2[..., F:]), l), (xn, c1n)

    def _deconv_u(self, x, wk):
        """Down-shifted (2, 3) stride-2 transposed conv of one row: (B, W, F) -> (B, 2, 2W, F)."""
        B, Wc, _ = x.shape
        y = tf.nn.conv2d_transpose(x[:, None], wk.k, [B, 3, 2 * Wc + 2, self.F],
                                   [1, 2, 2, 1], padding="VALID")
        return y[:, :2, 1:2 * Wc + 1] + wk.b

    def _u_rows(self, n, st, w, new, xp, i):
        """The u stream at row i on levels 0 .. n-1, sets its caches in ``new``. Returns per
        level the up pass's rows (its first layer's output, then every block's) and the
        down pass's block outputs, (B, W_l, F) each."""
        u_up, u_down = [], [None] * n
        for l in range(n):
            lw = w.levels[l]
            if l == 0:       # down_shift(u_init(x_pad)): rows i-2, i-1; zeros on row 0
                u = self._row_conv(xp[:, 0], xp[:, 1], w.u_init) * tf.cast(i > 0, self.dtype)
            else:
                u = self._row_conv(st["u_ds"][l - 1], u_up[l - 1][-1], lw.ds_u, 2)
            u = self._col_mask(u, l)
            rows, prevs = [u], []
            for k, wb in enumerate(lw.up_u):
                u, p = self._u_block(wb, u, st["u_up"][l][k], l, self._s_term(w, wb, l, i))
                rows.append(u)
                prevs.append(p)
            u_up.append(rows)
            new["u_up"][l] = prevs
            if l < self.n_levels - 1:
                new["u_ds"][l] = rows[-1]
        for l in reversed(range(n)):
            lw = w.levels[l]
            if l == self.n_levels - 1:   # the coarsest starts from its up pass's last row
                u, shortcuts = u_up[l][-1], u_up[l][:-1]
            else:   # the transposed conv's first row if the coarser level has a new row,
                    # else its second, kept from the row before
                u, shortcuts = new["u_us"][l][:, 0 if l + 1 < n else 1], u_up[l]
            rows, prevs = [], []
            for k, wb in enumerate(lw.down_u):
                u, p = self._u_block(wb, u, st["u_down"][l][k], l, self._s_term(w, wb, l, i),
                                     a=shortcuts[-1 - k])
                rows.append(u)
                prevs.append(p)
            u_down[l] = rows
            new["u_down"][l] = prevs
            if l > 0:        # two rows of the next finer level
                new["u_us"][l - 1] = self._col_mask(self._deconv_u(u, lw.us_u), l - 1)
        return u_up, u_down

    def _ul_above(self, l, st, w, u_up, u_down, xp, i):
        """Everything the ul-stream convs of level l get from the row above (and from the
        u stream, biases and labels), for the whole row: a list of (B, W_l, F_k), in the
        order the pixel loop reads them (first layer; per up block conv1, conv2; per down
        block conv1, conv2)."""
        nl, lw = self.nl, w.levels[l]
        if l == 0:
            wi = w.ul_init
            prev = xp[:, 1]                                            # x_pad row i-1
            down = tf.nn.conv2d(prev[:, None], wi.down, 1, [[0, 0], [0, 0], [1, 1], [0, 0]])
            out = [(down[:, 0] + wi.bd) * tf.cast(i > 0, self.dtype)
                   + _shift_right(dense(prev, (wi.r_top, wi.br)))]
        else:
            out = [self._top_conv(st["ul_ds"][l - 1], lw.ds_ul.top, 2) + lw.ds_ul.b]
        # The u stream's short-cuts: an up block's is the u block's output beside it; of a
        # down block's, concat([u, ul]), the u part (the ul part is added per position).
        blocks = [(wb, prev, dense(nl(u_up[l][k + 1]), wb.a))
                  for k, (wb, prev) in enumerate(zip(lw.up_ul, st["ul_up"][l]))]
        blocks += [(wb, prev, dense(nl(u_down[l][k]), wb.a_u))
                   for k, (wb, prev) in enumerate(zip(lw.down_ul, st["ul_down"][l]))]
        for wb, prev, shortcut in blocks:
            out.append(self._top_conv(prev[0], wb.conv1.top) + wb.conv1.b + shortcut)
            out.append(self._top_conv(prev[1], wb.conv2.top) + wb.conv2.b + wb.h[:, None, :]
                       + self._s_term(w, wb, l, i))
        return out

    # ------------------------------------------------------------------ pixel level
    def _pixel_loop(self, n, packed, ul_us, w, noise, given_row, n_given):
        """The ul stream along a row on which levels 0 .. n-1 get a new row, one position of
        the coarsest of them per step (G positions of level 0).

        packed: per level, (W_l, B, S) row-above parts; ul_us: (W_l, B, F) bottom rows of the
        transposed convs from the row before; noise: (W, B, .) per position; the first
        n_given positions take the pixels given_row (W, B, C) instead of drawn ones, and the
        next position and the caches read those. Returns per level the (W_l, B, S') records
        the next row needs (see ``_step``), and the row's pixels (W, B, C), float32.
        """
        B, W, F, G, dt = self.B, self.W, self.F, self.G, self.dtype

        def no_pending(l):
            pair = lambda: (tf.zeros((B, F), dt), tf.zeros((B, 2 * F), dt))
            return Pending(tf.zeros((B, F), dt), [pair() for _ in range(self.n_up[l])],
                           [pair() for _ in range(self.n_down[l])])

        # Per level the records; last, the pixels (float32 whatever the compute dtype).
        tas0 = [tf.TensorArray(dt, size=self.widths[l]) for l in range(n)]
        tas0.append(tf.TensorArray(tf.float32, size=W))

        def body(g, pend, tas):
            loop = _Loop(n, g, packed, ul_us, w, list(pend), list(tas), {})
            for s in range(G):
                j = G * g + s
                ul = self._step(0, s, None, loop)
                pixel = self.head.from_features(w.head, ul, [tf.gather(x, j) for x in noise],
                                                dt)                              # (B, C)
                pixel = tf.where(j < n_given, tf.gather(given_row, j), pixel)
                xin = self.head.inputs(pixel, dt)                       # (B, Cin)
                xpad = tf.concat([xin, tf.ones_like(xin[:, :1])], -1)
                if self.padded:      # the padded columns' values and ones channel: zeros
                    pixel = tf.where(j < self.hw[1], pixel, tf.zeros_like(pixel))
                    xpad = xpad * self._position_mask(0, j)
                loop.pend[0] = loop.pend[0]._replace(first=tf.matmul(xpad, w.ul_init.r_cur))
                loop.tas[-1] = loop.tas[-1].write(j, pixel)
            return g + 1, loop.pend, loop.tas

        _, _, tas = tf.while_loop(lambda g, p, ta: g < W // G, body,
                                  (tf.constant(0), [no_pending(l) for l in range(n)], tas0))
        stacked = [ta.stack() for ta in tas]
        return stacked[:-1], stacked[-1]

    def _step(self, l, s, from_finer, loop):
        """Level l (of the loop.n that get a new row) at its position under column s of the
        loop's step (s a multiple of 2**l): the level's up pass, the coarser level's step if
        this position feeds one, the level's down pass. Writes its records (every block's
        (nl(x), nl(c1)); the up pass's last output if the next row of this level feeds the
        stride-2 conv into level l + 1; the bottom row of the 2x2 block emitted to level
        l - 1). Returns the ul value (B, F) the finer level's down pass starts from at this
        position, or at full resolution the last one, for the head.

        from_finer: the stride-2 conv's tap (1, 1) on the finer level's current value (B, F),
        None at full resolution.
        """
        F, n, lw, p = self.F, loop.n, loop.w.levels[l], loop.pend[l]
        c = loop.g * (self.G >> l) + (s >> l)                     # the position on level l
        nu = self.n_up[l]
        above = tf.split(tf.gather(loop.packed[l], c),
                         [F] + [F, 2 * F] * (nu + self.n_down[l]), -1)
        first = above[0] + p.first
        if from_finer is not None:
            first += from_finer
        m = self._position_mask(l, c)
        lst, lst_n, recs, up_pend = self._ul_up(lw, _masked(first, m), above[1:1 + 2 * nu],
                                                p.up, m)
        coarser, odd = l + 1 < n, (s >> l) % 2 == 1
        ds = loop.w.levels[l + 1].ds_ul if coarser else None
        if coarser and odd:      # the left neighbour of level l + 1's next position
            loop.pend[l + 1] = loop.pend[l + 1]._replace(first=tf.matmul(lst[-1], ds.k10))
        if coarser and not odd:
            start = self._step(l + 1, s, tf.matmul(lst[-1], ds.k11), loop)
        elif coarser:            # the right pixel of the block emitted on the last step
            start = loop.carry[l]
        elif l == self.n_levels - 1:    # the coarsest level starts from its up pass's last output
            start = lst[-1]
        else:                    # the coarser level emitted this row's block on the row before
            start = tf.gather(loop.ul_us[l], c)
        ul, down_recs, down_pend = self._ul_down(lw, _masked(start, m), lst, lst_n,
                                                 above[1 + 2 * nu:], p.down, m)
        loop.pend[l] = loop.pend[l]._replace(up=up_pend, down=down_pend)
        recs += down_recs
        if l == n - 1 and n < self.n_levels:
            recs.append(lst[-1])
        if l > 0:
            block = dense(ul, lw.us_ul)                      # (B, 4F): the 2x2 block
            loop.carry[l - 1] = block[:, F:2 * F]
            recs.append(block[:, 2 * F:])
            ul = block[:, :F]
        loop.tas[l] = loop.tas[l].write(c, tf.concat(recs, -1))
        return ul

    def _position_mask(self, l, c):
        """The column mask of position c on level l, a scalar in the compute dtype; None
        without padded columns."""
        if not self.padded:
            return None
        return tf.cast(c < self.valid[l], self.dtype)

    def _ul_block(self, wb, x, above, pend, m, a_n=None):
        """One gated resnet of the ul stream at one position: x (B, F) -> (B, F).

        above: (row-above part of conv1, of conv2); pend: (tap (1,0) of the previous position
        for conv1, conv2); m: the position's column mask (or None); a_n: nl(ul short-cut)
        (B, Fn) of a down-pass block. Returns out, its records (nl(x), nl(c1)) and the
        pendings for the next position.
        """
        # Written with few ops (split, add_n): per-op overhead bounds this loop on CPU.
        nl = self.nl
        xn = nl(x)
        y1, next1 = tf.split(tf.matmul(xn, wb.conv1.cur), 2, axis=1)     # (B, F) x 2
        terms = [above[0], pend[0], y1]
        if a_n is not None:
            terms.append(tf.matmul(a_n, wb.a_ul))
        c1n = _masked(nl(tf.add_n(terms)), m)
        y2, next2 = tf.split(tf.matmul(c1n, wb.conv2.cur), 2, axis=1)    # (B, 2F) x 2
        a, b = tf.split(tf.add_n([above[1], pend[1], y2]), 2, axis=1)
        return _masked(x + a * tf.sigmoid(b), m), (xn, c1n), (next1, next2)

    def _ul_up(self, lw, start, above, pend, m):
        """Level lw's up pass at one position from start (B, F). Returns the level's ul list
        (start, then every block's output), nl() of the blocks' inputs, records and
        pendings."""
        ul, lst, lst_n, recs, pends = start, [start], [], [], []
        for k, wb in enumerate(lw.up_ul):
            ul, rec, p = self._ul_block(wb, ul, above[2 * k:2 * k + 2], pend[k], m)
            lst.append(ul)
            lst_n.append(rec[0])
            recs += rec
            pends.append(p)
        return lst, lst_n, recs, pends

    def _ul_down(self, lw, start, lst, lst_n, above, pend, m):
        """Level lw's down pass at one position from start (B, F); block k pops its
        short-cut off the level's up-pass list ``lst`` (``lst_n``: nl() of its first
        entries). Returns the last output, records and pendings."""
        nd = len(lw.down_ul)
        shortcuts = lst_n + [self.nl(x) for x in lst[len(lst_n):nd]]
        ul, recs, pends = start, [], []
        for k, wb in enumerate(lw.down_ul):
            ul, rec, p = self._ul_block(wb, ul, above[2 * k:2 * k + 2], pend[k], m,
                                        a_n=shortcuts[nd - 1 - k])
            recs += rec
            pends.append(p)
        return ul, recs, pends
