"""The original PixelCNN (van den Oord, Kalchbrenner, Kavukcuoglu 2016): the baseline.

Causality comes from masked convolutions (PixelCNN++ uses shifts instead). Sub-pixels are
ordered in raster order and, within a pixel, R before G before B:

    x_(0,0,R), x_(0,0,G), x_(0,0,B), x_(0,1,R), ...

Every feature map belongs to one colour group (R, G or B; one group for grayscale). A masked
kernel lets information flow only from earlier pixels (rows above; the current row left of
the centre) and, at the centre tap, from input groups before the output's group (mask A,
the first layer: a sub-pixel never sees itself) or at and before it (mask B, every later
layer: features of the same group, which already exclude that sub-pixel, may flow on).

Each sub-pixel gets a 256-way softmax over its 8-bit value; ``softmax_log_prob`` is its
likelihood (the model's ``objective``, ``nll_per_image`` and ``subpixel_log_prob`` sum it as
PixelCNNPP's do theirs) and ``sample`` draws images exactly, one network pass per sub-pixel.

As a prior over discrete codes (``num_categories=K``; the model class of keras.io's VQ-VAE
prior), a code map (B, H, W) of ints in [0, K) is one "channel": a single colour group, the
codes one-hot into the mask-A conv, and K logits per position, under the cross-entropy;
``sample`` draws code maps one pass per position.
"""

import keras
import numpy as np
import tensorflow as tf
from pixelcnn_pp.errors import InvalidInputError
from pixelcnn_pp.likelihood import categorical_log_prob, categorical_loss

__all__ = ["causal_mask", "MaskedConv2D", "PixelCNN", "softmax_log_prob", "sample"]


# ---------------------------------------------------------------------------- masks
def channel_groups(num_features, num_channels):
    """Colour group of each of ``num_features`` feature maps: contiguous, near-equal blocks.

    (num_features,) int array; e.g. 6 features, 3 channels -> [0, 0, 1, 1, 2, 2]. The image
    itself (num_features == num_channels) gets [0, 1, 2], and the C*256 output logits get
    256 of each group in order, so they reshape to (..., C, 256) directly.
    """
    return np.arange(num_features) * num_channels // num_features


def causal_mask(kernel_size, in_features, out_features, mask_type, num_channels=3):
    """The 0/1 mask of a (kh, kw, in_features, out_features) kernel; kh, kw odd.

    Taps above the centre row, and left of the centre in the centre row, are 1 (earlier
    pixels); taps right of the centre and below are 0 (later pixels). At the centre tap,
    output group o connects to input group i iff i < o (mask "A") or i <= o (mask "B").
    """
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise InvalidInputError(f"masked convolutions need odd kernel sizes; got {kernel_size}")
    if mask_type not in ("A", "B"):
        raise InvalidInputError(f"mask_type must be 'A' or 'B'; got {mask_type!r}")
    mask = np.zeros((kh, kw, in_features, out_features), np.float32)
    mask[:kh // 2] = 1.0                                   # rows above
    mask[kh // 2, :kw // 2] = 1.0                          # same row, to the left
    g_in = channel_groups(in_features, num_channels)[:, None]
    g_out = channel_groups(out_features, num_channels)[None, :]
    mask[kh // 2, kw // 2] = (g_in < g_out) if mask_type == "A" else (g_in <= g_out)
    return mask


class MaskedConv2D(keras.layers.Layer):
    """A 'SAME' conv whose kernel is multiplied by a fixed causal mask on every call.

    Output (i, j, group o) sees input pixels before (i, j) in raster order, plus input
    groups < o (mask A) or <= o (mask B) of pixel (i, j) itself, and nothing else. The mask
    is a constant, not a weight: no optimiser or weight load can break causality, and the
    kernel values at masked taps are simply unused (their gradients are zero).

    (B, H, W, Cin) -> (B, H, W, filters).
    """

    def __init__(self, filters, kernel_size, mask_type, num_channels=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = ((kernel_size, kernel_size) if isinstance(kernel_size, int)
                            else tuple(kernel_size))
        self.mask_type = mask_type
        self.num_channels = int(num_channels)

    def build(self, input_shape):
        shape = self.kernel_size + (int(input_shape[-1]), self.filters)
        # A numpy array, turned into a graph constant in every call (a tensor made here
        # could belong to a build-time graph).
        self.kernel_mask = causal_mask(self.kernel_size, shape[2], shape[3], self.mask_type,
                                self.num_channels)
        self.kernel = self.add_weight(name="kernel", shape=shape,
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x):
        kernel = tf.cast(self.kernel * tf.constant(self.kernel_mask), self.compute_dtype)
        y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
        return tf.nn.bias_add(y, tf.cast(self.bias, self.compute_dtype))


# ---------------------------------------------------------------------------- network
class ResidualBlock(keras.layers.Layer):
    """The paper's residual block (its Figure 5), all convs mask B:

    x (B, H, W, 2h) -> relu -> 1x1 (h) -> relu -> 3x3 (h) -> relu -> 1x1 (2h), + x.
    As causal as a single mask-B conv.
    """

    def __init__(self, filters, num_channels, **kwargs):
        super().__init__(**kwargs)
        half = max(filters // 2, num_channels)
        self.reduce = MaskedConv2D(half, 1, "B", num_channels)
        self.conv = MaskedConv2D(half, 3, "B", num_channels)
        self.expand = MaskedConv2D(filters, 1, "B", num_channels)

    def call(self, x):
        h = self.reduce(tf.nn.relu(x))
        h = self.conv(tf.nn.relu(h))
        return x + self.expand(tf.nn.relu(h))


class PixelCNN(keras.Model):
    """PixelCNN with a 256-way softmax per sub-pixel (van den Oord et al. 2016, Table 1).

      7x7 conv, mask A                           (B, H, W, C) -> (B, H, W, F)
      num_layers x [residual block | relu, 3x3 conv mask B]       (B, H, W, F)
      relu, 1x1 conv mask B; relu, 1x1 conv mask B               (B, H, W, C*256)
      reshape                                                    (B, H, W, C, 256)

    With ``num_categories=K``, over code maps: one-hot codes (B, H, W, K) into the mask-A
    conv, every mask with a single group, and the last conv gives (B, H, W, K) logits.

    Args:
      num_layers: mask-B layers after the first: residual blocks (``residual=True``, each
        with one 3x3 conv) or plain 3x3 convs with ReLU.
      num_filters: feature maps F of the main stack (the paper's 2h); at least 2C.
      num_channels: 3 (RGB) or 1 (grayscale); default 3, and 1 (the only value allowed)
        for codes.
      residual: residual blocks (default) or a plain stack of 3x3 convs.
      fast_ops: accepted and kept as ``self.fast_ops`` so that callers treat both models
        alike; the baseline has no fast paths.
      num_categories: K for a prior over discrete codes in [0, K), else None (images).

    Call: ``model(x, training=False)``, x (B, H, W, C) float32 in [-1, 1] (any H, W);
    returns logits (B, H, W, C, 256); for codes x (B, H, W) ints, logits (B, H, W, K).
    ``training`` changes nothing (no dropout).

    Implements ``interface.AutoregressiveModel``, as PixelCNNPP does.
    """

    def __init__(self, num_layers=15, num_filters=128, num_channels=None, residual=True,
                 fast_ops=False, num_categories=None, **kwargs):
        super().__init__(**kwargs)
        if num_categories is not None:
            if int(num_categories) < 2:
                raise InvalidInputError(f"num_categories must be >= 2 (codes in [0, K)); got "
                                        f"{num_categories}")
            if num_channels not in (None, 1):
                raise InvalidInputError(f"a prior over codes has one channel (a code per "
                                        f"position): drop num_channels={num_channels}")
            num_channels = 1
        elif num_channels is None:
            num_channels = 3
        if num_channels not in (1, 3):
            raise InvalidInputError(f"num_channels must be 1 (grayscale) or 3 (RGB); got "
                                    f"{num_channels}")
        if num_filters < 2 * num_channels:
            raise InvalidInputError(f"num_filters must be at least {2 * num_channels} so that "
                                    f"every colour group has feature maps; got {num_filters}")
        self.num_layers = int(num_layers)
        self.num_filters = F = int(num_filters)
        self.num_channels = C = int(num_channels)
        self.num_categories = int(num_categories) if num_categories is not None else None
        self.num_classes = None       # unconditional
        self.spatial_channels = None  # no spatial condition
        self.rng = None               # no dropout: no generator to checkpoint
        self.fast_ops = bool(fast_ops)  # nothing to speed up: the same ops either way
        self.residual = bool(residual)
        self.conv_in = MaskedConv2D(F, 7, "A", C)
        for i in range(self.num_layers):
            # One attribute per block, not a list: Keras 3 wraps list attributes in a type
            # tf.train.Checkpoint does not follow, so their weights would not be saved.
            setattr(self, f"block_{i}",
                    ResidualBlock(F, C) if self.residual else MaskedConv2D(F, 3, "B", C))
        self.conv_out1 = MaskedConv2D(F, 1, "B", C)
        self.conv_out2 = MaskedConv2D(self.num_categories or C * 256, 1, "B", C)

    @property
    def blocks(self):
        """The num_layers mask-B blocks, in order."""
        return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

    def call(self, x, h=None, training=False):
        if h is not None:
            raise InvalidInputError("this PixelCNN is unconditional; got h")
        x = tf.convert_to_tensor(x)
        if self.num_categories:
            if x.shape.rank != 3 or not x.dtype.is_integer:
                raise InvalidInputError(f"this PixelCNN is a prior over codes (num_categories="
                                        f"{self.num_categories}): x must be (B, H, W) integer "
                                        f"codes; got {x.dtype.name} {x.shape}")
            x = tf.one_hot(tf.cast(x, tf.int32), self.num_categories)   # (B, H, W, K)
        elif x.shape.rank != 4 or x.shape[-1] != self.num_channels:
            raise InvalidInputError(f"PixelCNN(num_channels={self.num_channels}) expects images of "
                                    f"shape (B, H, W, {self.num_channels}); got {x.shape}")
        y = self.conv_in(tf.cast(x, self.compute_dtype))          # (B, H, W, F)
        for blk in self.blocks:
            y = blk(y) if self.residual else tf.nn.relu(blk(y))
        y = self.conv_out1(tf.nn.relu(y))
        y = self.conv_out2(tf.nn.relu(y))                        # (B, H, W, C*256 or K)
        if self.num_categories:
            return tf.cast(y, tf.float32)                         # (B, H, W, K)
        # Output feature k is in colour group k // 256 (channel_groups), hence this reshape.
        shape = tf.concat([tf.shape(y)[:3], [self.num_channels, 256]], 0)
        return tf.cast(tf.reshape(y, shape), tf.float32)          # (B, H, W, C, 256)

    def initialize(self, x, h=None, training=True):
        """Build the model on one batch and return its output.

        The same surface as PixelCNNPP.initialize, but PixelCNN has no data-dependent
        initialisation: this only creates the weights (Glorot-uniform kernels, zero biases).
        """
        return self(x, h=h, training=training)

    def objective(self, x, out):
        """The training objective: the negative log-likelihood under the 256-way softmax
        summed over the batch, in nats (float32). x (B, H, W, C), out (B, H, W, C, 256); for
        codes the cross-entropy of x (B, H, W) under out (B, H, W, K)."""
        if self.num_categories:
            return categorical_loss(x, out)
        return -tf.reduce_sum(softmax_log_prob(x, out))

    def nll_per_image(self, x, out):
        """(B,) negative log-likelihood of each image (or code map), nats. Bits/dim:
        ``likelihood.bits_per_dim``."""
        if self.num_categories:
            return categorical_loss(x, out, sum_all=False)
        return -tf.reduce_sum(softmax_log_prob(x, out), axis=[1, 2, 3])

    def subpixel_log_prob(self, x, out):
        """(B, H, W, C) log p of each sub-pixel given all before it, nats; (B, H, W) of each
        code for a prior over codes."""
        if self.num_categories:
            return categorical_log_prob(x, out)
        return softmax_log_prob(x, out)

    def sample_images(self, batch_size, image_shape, h=None, seed=0, method=None,
                      jit_compile=None, progress=None):
        """``sample(self, ...)``, the interface PixelCNNPP offers too. The baseline has one
        sampler (one graph of a full pass per sub-pixel): ``method`` and ``jit_compile`` are
        not used; ``progress(H, H)`` is called once, when the images are done."""
        x = sample(self, batch_size, image_shape, h=h, seed=seed)
        if progress is not None:
            progress(int(image_shape[0]), int(image_shape[0]))
        return x


# ---------------------------------------------------------------------------- likelihood
def _to_int(x):
    """[-1, 1] floats -> 8-bit values 0..255 as int32: round((x + 1) * 127.5)."""
    v = tf.round((tf.cast(x, tf.float32) + 1.0) * 127.5)
    return tf.cast(tf.clip_by_value(v, 0.0, 255.0), tf.int32)


def softmax_log_prob(x, logits):
    """log p of each sub-pixel in nats: x (B, H, W, C) in [-1, 1], logits (B, H, W, C, 256)
    -> (B, H, W, C)."""
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=_to_int(x), logits=tf.cast(logits, tf.float32))


# ---------------------------------------------------------------------------- sampling
def sample(model, batch_size, image_shape, h=None, seed=0):
    """Exact ancestral sampling: (batch_size, H, W, C) float32 in [-1, 1] on the 8-bit grid;
    for a prior over codes (image_shape (H, W)), (batch_size, H, W) int32 codes, position t
    drawn as sub-pixel t is.

    Starting from zeros, sub-pixels are drawn in raster order and R, G, B order, one full
    network pass each (H*W*C passes), all inside one tf.function. Sub-pixel number t draws
    with the stateless seed fold_in(seed, t), so a seed fixes the images. seed: an int or a
    pair of ints. h must be None (the baseline is unconditional).
    """
    if h is not None:
        raise InvalidInputError("this PixelCNN is unconditional; got h")
    seed = tf.constant([seed, 0] if np.ndim(seed) == 0 else seed, tf.int64)
    if model.num_categories:
        if len(image_shape) != 2:
            raise InvalidInputError(f"a prior over codes draws (H, W) code maps; got "
                                    f"image_shape {tuple(image_shape)}")
        H, W = (int(s) for s in image_shape)
        return _sample_codes_loop(model, int(batch_size), H, W, seed)
    H, W, C = (int(s) for s in image_shape)
    if C != model.num_channels:
        raise InvalidInputError(f"the model draws {model.num_channels}-channel images; got "
                                f"image_shape {tuple(image_shape)}")
    return _sample_loop(model, int(batch_size), H, W, C, seed)


@tf.function
def _sample_loop(model, batch_size, H, W, C, seed):
    """The whole H*W*C-pass loop as one graph; traced once per model and shape (the seed is a
    tensor, so new seeds reuse the trace)."""

    def body(t, x):
        pos, c = t // C, t % C
        i, j = pos // W, pos % W
        logits = model(x, training=False)[:, i, j, c]                  # (B, 256)
        s = tf.random.experimental.stateless_fold_in(seed, tf.cast(t, tf.int64))
        v = tf.random.stateless_categorical(logits, 1, seed=s)[:, 0]   # (B,)
        v = (tf.cast(v, tf.float32) - 127.5) / 127.5
        where = (tf.one_hot(i, H)[:, None, None] * tf.one_hot(j, W)[None, :, None]
                 * tf.one_hot(c, C)[None, None, :])                    # (H, W, C), one 1
        return t + 1, x * (1.0 - where) + v[:, None, None, None] * where

    x0 = tf.zeros([batch_size, H, W, C], tf.float32)
    return tf.while_loop(lambda t, x: t < H * W * C, body, [tf.constant(0), x0])[1]


@tf.function
def _sample_codes_loop(model, batch_size, H, W, seed):
    """The H*W-pass loop over code maps, as ``_sample_loop`` over sub-pixels."""

    def body(t, x):
        i, j = t // W, t % W
        logits = model(x, training=False)[:, i, j]                     # (B, K)
        s = tf.random.experimental.stateless_fold_in(seed, tf.cast(t, tf.int64))
        v = tf.random.stateless_categorical(logits, 1, seed=s, dtype=tf.int32)[:, 0]
        where = tf.cast(tf.one_hot(i, H)[:, None] * tf.one_hot(j, W)[None, :], tf.int32)
        return t + 1, x * (1 - where) + v[:, None, None] * where

    x0 = tf.zeros([batch_size, H, W], tf.int32)
    return tf.while_loop(lambda t, x: t < H * W, body, [tf.constant(0), x0])[1]
