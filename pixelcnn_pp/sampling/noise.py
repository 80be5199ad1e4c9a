"""The randomness of sampling, shared by both samplers, and how one pixel is drawn from it.

Every position (i, j) of an image gets its own uniforms, derived statelessly from
(seed, i·W + j): whatever order a sampler visits the positions in, and whichever of them it
skips (completion), it draws pixel (i, j) with the same numbers, so for one seed the naive and
the fast sampler draw the same images.
"""

import tensorflow as tf

from pixelcnn_pp.likelihood import sample_from_discretized_mix_logistic

__all__ = ["position_noise", "energy_noise", "code_noise", "rows_noise", "sample_pixel"]

_ALG = "philox"          # fixed, so that XLA and the plain kernels draw the same numbers
_LOW, _HIGH = 1e-5, 1.0 - 1e-5


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
    # Deviation: per-position stateless noise (the original drew from the global generator),
    # so the naive and the fast sampler draw the same image for a seed.
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


def code_noise(seed, i, j, width, batch_size, num_categories):
    """The K-way head's uniforms for code (i, j): (B, K), U(1e-5, 1 - 1e-5), for Gumbel-max
    (``likelihood.sample_categorical``); derived statelessly as ``position_noise``."""
    key = tf.random.experimental.stateless_fold_in(_position_key(seed, i, j, width), 3,
                                                   alg=_ALG)
    return tf.random.stateless_uniform([batch_size, num_categories], key, minval=_LOW,
                                       maxval=_HIGH, alg=_ALG)


@tf.function(autograph=False)
def rows_noise(seed, i0, rows, width, batch_size, nr_mix, num_channels, energy,
               num_categories=0):
    """The noise of every position of rows i0 .. i0 + rows - 1: (rows, W, B, M),
    (rows, W, B, C) and, for an energy-distance model, (rows, W, B, 4); for a prior over
    codes (num_categories = K), only (rows, W, B, K). Drawn outside XLA, whose stateless RNG
    gives other numbers for the same seed."""
    def body(k, tas):
        i, j = i0 + k // width, k % width
        if num_categories:
            out = (code_noise(seed, i, j, width, batch_size, num_categories),)
        else:
            out = position_noise(seed, i, j, width, batch_size, nr_mix, num_channels)
        if energy:
            out += (energy_noise(seed, i, j, width, batch_size),)
        return k + 1, tuple(ta.write(k, o) for ta, o in zip(tas, out))

    n = rows * width
    count = 1 if num_categories else 3 if energy else 2
    tas = tuple(tf.TensorArray(tf.float32, size=n) for _ in range(count))
    _, tas = tf.while_loop(lambda k, _: k < n, body, (tf.constant(0), tas))
    return tuple(tf.reshape(ta.stack(), [rows, width, batch_size, -1]) for ta in tas)


def sample_pixel(l, noise, nr_mix, num_channels, temperature=1.0):
    """l (B, P) mixture parameters, noise (u_mix (B, M), u (B, C)) -> the pixel (B, C)."""
    u_mix, u = noise
    x = sample_from_discretized_mix_logistic(l[:, None, None, :], nr_mix, num_channels,
                                             noise=(u_mix[:, None, None], u[:, None, None]),
                                             temperature=temperature)
    return x[:, 0, 0]
