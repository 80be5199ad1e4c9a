"""Layers of PixelCNN++: weight-normalised convolutions, causal shifts, gated resnets.

Everything here follows ``pixel_cnn_pp/nn.py`` of the original (docs/ORIGINAL.md §1). Causality
comes from padding and shifting, never from masks:

* ``down_shifted_*`` layers see only rows above (and the current row for the ``u`` stream's
  first layer is removed by ``down_shift``),
* ``down_right_shifted_*`` layers see only rows above and pixels to the left.

Weight normalisation (Salimans & Kingma 2016): every layer holds ``V`` (direction), ``g``
(scale) and ``b`` (bias), and supports data-dependent initialisation: while
``layer.ddi`` is True, a call normalises its own pre-activation output to mean 0 and
variance ``init_scale**2`` per channel by rescaling ``g`` and ``b``, then recomputes the
output with the new values (as the original does) and passes that on.

``fast_ops=True`` (given to the convolutions, ``GatedResnet`` and ``dropout``, default False)
computes the same formulas with the faster versions of ``fast_ops.py``.
"""

import keras
import tensorflow as tf

from pixelcnn_pp import fast_ops as fast
from pixelcnn_pp.errors import InvalidInputError

__all__ = [
    "concat_elu", "concat_rows", "dropout", "down_shift", "right_shift", "NONLINEARITIES",
    "WNConv2D", "WNDeconv2D", "WNDense", "NetworkInNetwork",
    "DownShiftedConv2D", "DownRightShiftedConv2D",
    "DownShiftedDeconv2D", "DownRightShiftedDeconv2D", "GatedResnet", "gate",
    "weight_normalize",
]


def concat_elu(x):
    """elu(concat([x, -x])) along channels: (..., C) -> (..., 2C)."""
    return tf.nn.elu(tf.concat([x, -x], axis=-1))


NONLINEARITIES = {"concat_elu": concat_elu, "elu": tf.nn.elu, "relu": tf.nn.relu}


def concat_rows(nonlinearity, widths):
    """Where each part of a concatenation lands in nl(concat(parts)) along channels, for parts
    of the given ``widths``: per part, a list of (start, end) channel ranges. concat_elu
    makes [parts..., -parts...]: two ranges per part; the elementwise ones keep each part's
    place. A nin on nl(concat(parts)) meets part i with these rows of its V."""
    if nonlinearity not in NONLINEARITIES:
        raise InvalidInputError(f"unknown nonlinearity {nonlinearity!r}; "
                                f"one of {sorted(NONLINEARITIES)}")
    total, rows, o = sum(widths), [], 0
    for w in widths:
        rows.append([(o, o + w), (total + o, total + o + w)]
                    if nonlinearity == "concat_elu" else [(o, o + w)])
        o += w
    return rows


def dropout(x, rate, seed, fast_ops=False):
    """Inverted dropout with a stateless (2,) seed: each element kept with probability
    exactly 1 - rate and scaled by 1 / (1 - rate), zeroed otherwise (the rule of the
    original's ``tf.nn.dropout``). x: any shape; returns x's shape and dtype."""
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise InvalidInputError(f"dropout rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return x
    # Deviation: the original's tf.nn.dropout draws from its op's own stateful generator, a
    # new mask each time the op runs; here (both draws below) the random numbers are a
    # stateless function of the seed passed in (GatedResnet draws one per call from the
    # model's generator): a resumed run draws the masks an uninterrupted one would, and a
    # block recomputed for its gradient draws the same mask again. Same keep rule and scale,
    # other random numbers.
    keep = None
    if fast_ops:
        # Deviation (fast_ops): the mask from 8 or 16 random bits per element, not a float.
        keep = fast.dropout_keep(tf.shape(x), rate, seed)
    if keep is None:
        keep = tf.random.stateless_uniform(tf.shape(x), seed, dtype=x.dtype) >= rate
    scale = tf.constant(1.0 / (1.0 - rate), x.dtype)
    return tf.where(keep, x * scale, tf.zeros([], x.dtype))


def _crop(x, rows, cols):
    """x[:, rows[0]:rows[1], cols[0]:cols[1]] (static bounds) as a Slice op: the same values
    as the strided slice, and its gradient is one Pad instead of a StridedSliceGrad."""
    return tf.slice(x, [0, rows[0], cols[0], 0], [-1, rows[1] - rows[0], cols[1] - cols[0], -1])


def down_shift(x):
    """(B, H, W, C): drop the last row and prepend a row of zeros."""
    H, W = x.shape[1:3]
    x = x[:, :-1] if H is None or W is None else _crop(x, (0, H - 1), (0, W))
    return tf.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]])


def right_shift(x):
    """(B, H, W, C): drop the last column and prepend a column of zeros."""
    H, W = x.shape[1:3]
    x = x[:, :, :-1] if H is None or W is None else _crop(x, (0, H), (0, W - 1))
    return tf.pad(x, [[0, 0], [0, 0], [1, 0], [0, 0]])


class _WeightNorm(keras.layers.Layer):
    """Shared machinery: V, g, b, and the data-dependent init step."""

    def __init__(self, num_filters, init_scale=1.0, **kwargs):
        # autocast=False: under a mixed-precision policy the weights are read in float32 (the
        # weight-norm statistics need it) and cast to the compute dtype explicitly (_cast).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_filters = int(num_filters)
        self.init_scale = float(init_scale)
        self.ddi = False  # set by PixelCNNPP.initialize for the data-dependent init pass
        # Set by checkpoint.build_model around the call that only creates the weights (a
        # checkpoint's values replace them next): the kernels are then used as V, unnormalised.
        self.creating_only = False
        # Evaluation: the effective weights (``effective()``) computed once for a pass over
        # the test split (``PixelCNNPP.given_weights``), used instead of recomputing them.
        self.given = None
        # V's initial values, N(0, 0.05) as the original's; checkpoint.build_model makes zeros
        # when a checkpoint's values replace them anyway (drawing 53.7M normals costs ~0.5 s).
        self.v_initializer = keras.initializers.RandomNormal(0.0, 0.05)

    def _make_weights(self, v_shape):
        self.V = self.add_weight(name="V", shape=v_shape, initializer=self.v_initializer)
        self.g = self.add_weight(name="g", shape=(self.num_filters,), initializer="ones")
        self.b = self.add_weight(name="b", shape=(self.num_filters,), initializer="zeros")

    def _apply(self, x):
        raise NotImplementedError

    def _crop(self, y):
        return y

    def call(self, x):
        y = self._apply(x)
        if self.ddi:
            # Data-dependent init (docs/ORIGINAL.md §1): normalise this layer's output on the init
            # batch, then recompute it with the new g, b so that later layers see the normalised
            # one.
            axes = list(range(len(y.shape) - 1))
            m, v = tf.nn.moments(tf.cast(y, self.variable_dtype), axes)
            scale = self.init_scale / tf.sqrt(v + 1e-10)
            self.g.assign(self.g * scale)
            self.b.assign_add(-m * scale)
            y = self._apply(x)
        # Shifted deconvs crop after the statistics: the original normalises the whole
        # transposed-conv output, then crops.
        return self._crop(y)

    def effective(self):
        """What weight normalisation makes of V and g: a convolution's kernel, a dense
        layer's per-output scale."""
        raise NotImplementedError

    def _normalized(self, axes, g_shape):
        """The effective kernel: the given one (``given``), V itself in a weight-creating call
        (``creating_only``: only its shape is used), else g V / ||V|| over ``axes``."""
        if self.given is not None:
            return self.given
        V, g = self._vg()
        if self.creating_only:
            return V
        return weight_normalize(V, g, axes, g_shape, self.fast_ops)

    def _vg(self):
        # Weight-norm statistics in the variable dtype (float32 also under mixed precision);
        # the effective weights are cast to the compute dtype where they are used.
        return (tf.convert_to_tensor(self.V, self.variable_dtype),
                tf.convert_to_tensor(self.g, self.variable_dtype))

    def _cast(self, w):
        return tf.cast(w, self.compute_dtype)


def weight_normalize(V, g, axes, g_shape, fast_ops=False):
    """g * V / ||V|| (norm over ``axes``; g reshaped to ``g_shape``), as the original computes
    it: ``g * tf.nn.l2_normalize(V, axes)``. V: a kernel; g: (F,); returns V's shape."""
    if fast_ops:
        # Deviation (fast_ops): the same forward ops, the gradient as one fused function.
        return fast.weight_normalize(V, g, axes, g_shape)
    return tf.reshape(g, g_shape) * tf.nn.l2_normalize(V, axes)


class _WNConvBase(_WeightNorm):
    """Filter size, stride and padding of the (transposed) convolutions; ``fast_ops``: the
    kernel's gradient by ``fast_ops.weight_normalize``."""

    def __init__(self, num_filters, filter_size=(3, 3), stride=(1, 1), padding="SAME",
                 init_scale=1.0, fast_ops=False, **kwargs):
        super().__init__(num_filters, init_scale, **kwargs)
        self.filter_size = tuple(filter_size)
        self.stride = tuple(stride)
        self.padding = padding
        self.fast_ops = bool(fast_ops)

    def effective(self):
        return self.kernel()


class WNConv2D(_WNConvBase):
    """Weight-normed conv2d. V: (fh, fw, Cin, F); W = g * V / ||V|| over (fh, fw, Cin)."""

    def build(self, input_shape):
        self._make_weights(self.filter_size + (int(input_shape[-1]), self.num_filters))

    def kernel(self):
        """The effective (weight-normalised) kernel, (fh, fw, Cin, F), float32."""
        return self._normalized((0, 1, 2), [1, 1, 1, self.num_filters])

    def _apply(self, x):
        return self._conv(x, self.padding)

    def _conv(self, x, padding):
        """padding: "SAME", "VALID", or explicit [[0, 0], [top, bottom], [left, right], [0, 0]]
        (zeros around x that the convolution adds itself)."""
        y = tf.nn.conv2d(x, self._cast(self.kernel()), (1,) + self.stride + (1,), padding)
        return tf.nn.bias_add(y, self._cast(self.b))

    def _apply_padded(self, x, pads):
        """The VALID convolution of x padded with zeros by ``pads`` ([[0, 0], [top, bottom],
        [left, right], [0, 0]]): a Pad op, then the convolution, as the original."""
        if self.fast_ops and fast.pads_inside_convolution():
            # Deviation (fast_ops): the convolution adds the zeros itself, no padded copy of
            # x: the same output bit for bit, the kernel's gradient summed in another order.
            return self._conv(x, pads)
        return self._conv(tf.pad(x, pads), "VALID")


class WNDeconv2D(_WNConvBase):
    """Weight-normed transposed conv2d. V: (fh, fw, F, Cin); normalised over (fh, fw, Cin)."""

    def build(self, input_shape):
        self._make_weights(self.filter_size + (self.num_filters, int(input_shape[-1])))

    def kernel(self):
        """The effective kernel, (fh, fw, F, Cin), float32."""
        return self._normalized((0, 1, 3), [1, 1, self.num_filters, 1])

    def output_hw(self, h, w):
        sh, sw = self.stride
        fh, fw = self.filter_size
        if self.padding == "SAME":
            return h * sh, w * sw
        return h * sh + fh - 1, w * sw + fw - 1

    def _apply(self, x):
        s = tf.shape(x)
        oh, ow = self.output_hw(x.shape[1], x.shape[2])
        y = tf.nn.conv2d_transpose(x, self._cast(self.kernel()),
                                   tf.stack([s[0], oh, ow, self.num_filters]),
                                   (1,) + self.stride + (1,), padding=self.padding)
        return tf.nn.bias_add(y, self._cast(self.b))


class WNDense(_WeightNorm):
    """Weight-normed dense: (N, Cin) -> (N, F); y = (x V) * g / ||V||_col + b (no epsilon)."""

    def build(self, input_shape):
        self._make_weights((int(input_shape[-1]), self.num_filters))

    def effective(self):
        """The per-output scale g / ||V|| (the columns' norms), float32."""
        if self.given is not None:
            return self.given
        V, g = self._vg()
        return g / tf.sqrt(tf.reduce_sum(tf.square(V), [0]))

    def _apply(self, x):
        return self._scale_bias(tf.matmul(x, self._v()))

    def _v(self):
        return self._cast(tf.convert_to_tensor(self.V, self.variable_dtype))

    def _scale_bias(self, xv):
        """The layer's output from the product x V: times g / ||V||, plus b."""
        scaler = self.effective()
        return (self._cast(tf.reshape(scaler, [1, -1])) * xv
                + self._cast(tf.reshape(self.b, [1, -1])))


class NetworkInNetwork(WNDense):
    """nin: a 1x1 convolution as a weight-normed dense layer on (..., Cin) -> (..., F)."""

    def _apply(self, x):
        return self._unflatten(super()._apply(tf.reshape(x, [-1, x.shape[-1]])), x)

    def _unflatten(self, y, x):
        """(N, F) back to x's leading shape: (..., F)."""
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.num_filters]], 0))

    def call(self, x, rows=None):
        """x: (..., Cin); or, with ``rows``, a list of parts (see ``apply_parts``)."""
        return super().call(x) if rows is None else self.apply_parts(x, rows)

    def apply_parts(self, parts, rows):
        """The layer on the concatenation of ``parts`` along channels, without making it:
        part i meets the rows of V listed in rows[i], a list of (start, end) ranges that
        together tile V's rows (``concat_rows``), by its own matrix product; the products
        are summed. The same formula as on the concatenation, summed in another order
        (round-off of the compute dtype). Call it as ``layer(parts, rows=rows)`` (weights
        read in the layer's own dtype scope), on a built layer, outside the data-dependent
        init."""
        ranges = sorted(r for part_rows in rows for r in part_rows)
        # One Split (its gradient one Concat) rather than a strided slice per range.
        pieces = dict(zip(ranges, tf.split(self._v(), [b - a for a, b in ranges], 0)))
        xv = None
        for x, part_rows in zip(parts, rows):
            Vi = tf.concat([pieces[r] for r in part_rows], 0) if len(part_rows) > 1 \
                else pieces[part_rows[0]]
            t = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), Vi)
            xv = t if xv is None else xv + t
        return self._unflatten(self._scale_bias(xv), parts[0])


class DownShiftedConv2D(WNConv2D):
    """Output (i, j) sees input rows <= i only (all columns within the filter's reach).

    Pads fh-1 rows on top and (fw-1)/2 columns each side, then a VALID conv.
    """

    def __init__(self, num_filters, filter_size=(2, 3), stride=(1, 1), **kwargs):
        super().__init__(num_filters, filter_size, stride, padding="VALID", **kwargs)

    def _apply(self, x):
        fh, fw = self.filter_size
        return self._apply_padded(x, [[0, 0], [fh - 1, 0], [(fw - 1) // 2, (fw - 1) // 2], [0, 0]])


class DownRightShiftedConv2D(WNConv2D):
    """Output (i, j) sees input rows <= i and columns <= j only.

    Pads fh-1 rows on top and fw-1 columns on the left, then a VALID conv.
    """

    def __init__(self, num_filters, filter_size=(2, 2), stride=(1, 1), **kwargs):
        super().__init__(num_filters, filter_size, stride, padding="VALID", **kwargs)

    def _apply(self, x):
        fh, fw = self.filter_size
        return self._apply_padded(x, [[0, 0], [fh - 1, 0], [fw - 1, 0], [0, 0]])


class DownShiftedDeconv2D(WNDeconv2D):
    """Transposed conv whose output rows see input rows at or above them only.

    VALID transposed conv, then keep rows [0, H'-fh+1) and columns [(fw-1)/2, W'-(fw-1)/2).
    """

    def __init__(self, num_filters, filter_size=(2, 3), stride=(1, 1), **kwargs):
        super().__init__(num_filters, filter_size, stride, padding="VALID", **kwargs)

    def _crop(self, y):
        fh, fw = self.filter_size
        c = (fw - 1) // 2
        return _crop(y, (0, y.shape[1] - fh + 1), (c, y.shape[2] - c))


class DownRightShiftedDeconv2D(WNDeconv2D):
    """Transposed conv whose output (i, j) sees inputs above-left only.

    VALID transposed conv, then keep rows [0, H'-fh+1) and columns [0, W'-fw+1).
    """

    def __init__(self, num_filters, filter_size=(2, 2), stride=(1, 1), **kwargs):
        super().__init__(num_filters, filter_size, stride, padding="VALID", **kwargs)

    def _crop(self, y):
        fh, fw = self.filter_size
        return _crop(y, (0, y.shape[1] - fh + 1), (0, y.shape[2] - fw + 1))


def gate(x, c2):
    """The gated resnet's output x + a * sigmoid(b), [a, b] = split(c2) along channels."""
    a, b = tf.split(c2, 2, axis=-1)
    return x + a * tf.sigmoid(b)


class GatedResnet(keras.layers.Layer):
    """Gated residual block (``nn.py: gated_resnet``): x + a * sigmoid(b) with [a, b] = conv(...)

    x: (B, H, W, C); a (optional short-cut input): (B, H, W, Ca); h (optional): (B, D) global
    condition (one-hot labels: D = num_classes); s (optional): (B, H, W, Ds) spatial condition
    features at this block's resolution. ``conv_cls`` is DownShiftedConv2D (u stream) or
    DownRightShiftedConv2D (ul stream); the block is exactly as causal as that conv with
    respect to x and a. ``fast_ops``: its convolutions, dropout and evaluation gate use the
    versions of ``fast_ops.py``.
    """

    def __init__(self, num_filters, conv_cls, nonlinearity="concat_elu", dropout_p=0.0,
                 has_a=False, h_dim=None, seed_generator=None, fast_ops=False,
                 has_spatial=False, **kwargs):
        super().__init__(**kwargs)
        self.num_filters = num_filters
        self.nonlinearity = NONLINEARITIES[nonlinearity]
        self.nonlinearity_name = nonlinearity
        self.dropout_p = float(dropout_p)
        self.seed_generator = seed_generator
        self.fast_ops = bool(fast_ops)
        # Made in the original's order (conv, short-cut nin, conv): see ``sublayers``.
        self.conv1 = conv_cls(num_filters, fast_ops=self.fast_ops)
        self.nin_a = NetworkInNetwork(num_filters) if has_a else None
        self.conv2 = conv_cls(2 * num_filters, init_scale=0.1, fast_ops=self.fast_ops)
        self.h_dim = h_dim
        # Spatial condition: a weight-normed 1x1 projection added like the class term (not in
        # the original; the Gated PixelCNN's V*s), scaled as conv2 at init.
        self.nin_s = NetworkInNetwork(2 * num_filters, init_scale=0.1) if has_spatial else None

    def build(self, input_shape):
        if self.h_dim:
            # Conditioning weights: not data-initialised (docs/ORIGINAL.md §1).
            self.hw = self.add_weight(
                name="hw", shape=(self.h_dim, 2 * self.num_filters),
                initializer=keras.initializers.RandomNormal(0.0, 0.05))

    def sublayers(self):
        """The weight-normed layers of this block, in the original's creation order (the
        spatial projection, which the original lacks, last)."""
        return [l for l in (self.conv1, self.nin_a, self.conv2, self.nin_s) if l is not None]

    def _a_rows(self, a_parts):
        """Per part of a: the rows of nin_a's V that nl(concat(a_parts)) puts it in front of."""
        return concat_rows(self.nonlinearity_name, [int(p.shape[-1]) for p in a_parts])

    def dropout_seed(self):
        """The (2,) stateless seed of one dropout mask, drawn from the model's generator."""
        return self.seed_generator.make_seeds(1)[:, 0]

    def call(self, x, a=None, h=None, training=False, recompute=False, s=None, valid=None):
        """x: the stream's input; a: the short-cut input, or a list of them (the block sees
        their concatenation along channels, as the original's ``tf.concat([u, ul], 3)`` at its
        call site; with ``fast_ops`` it is not made, see ``_block``); h: the
        (B, D) global condition, or None; s: the (B, H, W, Ds) spatial condition features, or
        None; valid: (1, H, W, 1) 1 at the image's positions and 0 at padding (images whose
        sides are not multiples of 4), or None: every activation that reaches a convolution
        is zero at padding, so padding is never seen.

        recompute (in training): gradient checkpointing, the original's ``checkpoints``
        collection for ``memory_saving_gradients``: only x, the parts of a and h are kept for
        the backward pass, which recomputes the block. The dropout seed is drawn once, before,
        so that the recomputation draws the same mask."""
        parts = [] if a is None else list(a) if isinstance(a, (list, tuple)) else [a]
        seed = self.dropout_seed() if training and self.dropout_p > 0 else None
        if training and recompute:
            return tf.recompute_grad(
                lambda x, *parts: self._block(x, parts, h, training, seed, s, valid))(x, *parts)
        return self._block(x, parts, h, training, seed, s, valid)

    def _block(self, x, a_parts, h, training, seed, s=None, valid=None):
        nl = self.nonlinearity
        c1 = self.conv1(nl(x))
        if len(a_parts) > 1 and self.fast_ops and self.nin_a.built and not (
                self.nin_a.ddi or self.nin_a.creating_only):
            # Deviation (fast_ops): nl(concat(a_parts)) is nl of each part, its channels
            # rearranged, and the graph mostly holds each nl(part) already (the down pass's u and
            # the up pass's ul are the x of other blocks too): the nin multiplies each by its
            # rows of V and sums (round-off of the compute dtype) instead of making the
            # concatenation.
            c1 = c1 + self.nin_a([nl(p) for p in a_parts], rows=self._a_rows(a_parts))
        elif a_parts:
            a = tf.concat(a_parts, axis=-1) if len(a_parts) > 1 else a_parts[0]
            c1 = c1 + self.nin_a(nl(a))
        c1 = nl(c1)
        if valid is not None:
            c1 = c1 * valid
        if seed is not None:
            c1 = dropout(c1, self.dropout_p, seed, self.fast_ops)
        c2 = self.conv2(c1)
        if h is not None:
            hw = tf.cast(self.hw, h.dtype)
            c2 = c2 + tf.cast(tf.matmul(h, hw), c2.dtype)[:, None, None, :]
        if s is not None:
            c2 = c2 + self.nin_s(s)
        if self.fast_ops and not training:
            # Deviation (fast_ops): evaluation's gate as one XLA-fused pass (training keeps the
            # plain ops: with its gradient the fused one is slower).
            out = fast.fused(gate)(x, c2)
        else:
            out = gate(x, c2)
        return out if valid is None else out * valid
