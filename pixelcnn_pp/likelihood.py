"""The discretized logistic mixture likelihood (docs/ORIGINAL.md §3) and the energy-distance loss.

``l`` is the network output, (B, H, W, P) with P = 10M for RGB: M mixture logits, then per
colour channel M means, M log-scales and M raw coupling coefficients (reshaped to
(B, H, W, 3, 3M)). Channel means are coupled autoregressively inside a pixel:
mean_G += c0 x_R and mean_B += c1 x_R + c2 x_G, with the true values of x (training) or the
sampled ones (sampling). Grayscale (C = 1) uses P = 3M: logits, means, log-scales.

Images are in [-1, 1]; an 8-bit value v sits at (v - 127.5) / 127.5, so a bin is 2/255 wide.
"""

import math

import numpy as np
import tensorflow as tf
from pixelcnn_pp.errors import InvalidInputError

__all__ = [
    "scale_images", "model_inputs", "categorical_log_prob", "categorical_loss", "sample_categorical",
    "discretized_mix_logistic_log_prob", "discretized_mix_logistic_loss", "nll_per_image",
    "subpixel_log_prob", "bits_per_dim", "sample_from_discretized_mix_logistic", "uniform_noise",
    "energy_distance_loss", "nr_mix_from_params",
]


def scale_images(x):
    """uint8 images -> float32 in [-1, 1], as the original's train.py: (x - 127.5) / 127.5.
    The likelihood's 256 bins are centred on this grid."""
    return (tf.cast(x, tf.float32) - 127.5) / 127.5


def model_inputs(x):
    """A batch as a model takes it: uint8 images -> float32 in [-1, 1] (``scale_images``);
    integer code maps stay as they are."""
    return scale_images(x) if x.dtype == tf.uint8 else x


def nr_mix_from_params(num_params, num_channels=3):
    """M from the last dimension of ``l``: P = 10M (RGB) or 3M (grayscale)."""
    per = 10 if num_channels == 3 else 3
    if num_params % per:
        raise InvalidInputError(f"a {num_channels}-channel mixture needs a multiple of {per} "
                                f"parameters per pixel; got {num_params}")
    return num_params // per


def _loss_dtype(t):
    """The likelihood runs in float32 (also under mixed precision), or float64 if given."""
    return tf.float64 if t.dtype == tf.float64 else tf.float32


def _unpack(l, num_channels):
    """l (B, H, W, P) -> logits (B,H,W,M), means, log_scales (B,H,W,C,M),
    coeffs (B,H,W,3,M) | None."""
    C = num_channels
    M = nr_mix_from_params(l.shape[-1], C)
    # tf.split, not slices: the same values, and the gradient is one concat instead of a
    # zero-filled copy of l per slice, added up.
    logit_probs, rest = tf.split(l, [M, l.shape[-1] - M], axis=-1)
    per_channel = 3 * M if C == 3 else 2 * M
    rest = tf.reshape(rest, tf.concat([tf.shape(l)[:-1], [C, per_channel]], 0))
    parts = tf.split(rest, per_channel // M, axis=-1)
    means, log_scales = parts[0], tf.maximum(parts[1], -7.0)
    coeffs = tf.tanh(parts[2]) if C == 3 else None
    return M, logit_probs, means, log_scales, coeffs


def _log_prob_from_logits(x):
    """log_softmax over the last axis, written as the original (numerically the same path)."""
    m = tf.reduce_max(x, axis=-1, keepdims=True)
    return x - m - tf.math.log(tf.reduce_sum(tf.exp(x - m), axis=-1, keepdims=True))


def _log_sum_exp(x):
    """logsumexp over the last axis, written as the original."""
    m = tf.reduce_max(x, axis=-1)
    m2 = tf.reduce_max(x, axis=-1, keepdims=True)
    return m + tf.math.log(tf.reduce_sum(tf.exp(x - m2), axis=-1))


def _component_log_probs(x, l):
    """Per component k and channel c, log p_k(x_c | x_<c) in nats, (B, H, W, C, M), and the
    log mixture weights log pi_k, (B, H, W, M): the terms of the original's loss, with its
    edge and tail cases. Channel c's term depends on x's channels 0..c only."""
    dtype = _loss_dtype(l)
    x = tf.cast(x, dtype)
    l = tf.cast(l, dtype)
    C = x.shape[-1]
    if C not in (1, 3):
        raise InvalidInputError(f"the logistic mixture is defined for 1 or 3 channels; got {C}")
    M, logit_probs, means, log_scales, coeffs = _unpack(l, C)
    x = x[..., None] + tf.zeros_like(means)                       # (B, H, W, C, M)
    if C == 3:     # per channel by tf.unstack (its gradient is one stack, not 3 copies)
        mu, cf, xc = (tf.unstack(t, axis=-2) for t in (means, coeffs, x))
        m2 = mu[1] + cf[0] * xc[0]
        m3 = mu[2] + cf[1] * xc[0] + cf[2] * xc[1]
        means = tf.stack([mu[0], m2, m3], axis=-2)
    centered_x = x - means
    inv_stdv = tf.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
    cdf_plus = tf.sigmoid(plus_in)
    min_in = inv_stdv * (centered_x - 1.0 / 255.0)
    cdf_min = tf.sigmoid(min_in)
    log_cdf_plus = plus_in - tf.nn.softplus(plus_in)        # log P(x <= value 0's upper edge)
    log_one_minus_cdf_min = -tf.nn.softplus(min_in)         # log P(x >= value 255's lower edge)
    cdf_delta = cdf_plus - cdf_min                          # mass of an inner bin
    mid_in = inv_stdv * centered_x
    log_pdf_mid = mid_in - log_scales - 2.0 * tf.nn.softplus(mid_in)
    # Edge bins take the whole tail; inner bins their mass; when that mass underflows (only for
    # very sharp components) fall back to the density at the bin centre times the bin width.
    log_probs = tf.where(
        x < -0.999, log_cdf_plus,
        tf.where(x > 0.999, log_one_minus_cdf_min,
                 tf.where(cdf_delta > 1e-5, tf.math.log(tf.maximum(cdf_delta, 1e-12)),
                          log_pdf_mid - tf.constant(np.log(127.5), dtype))))
    return log_probs, _log_prob_from_logits(logit_probs)


def discretized_mix_logistic_log_prob(x, l):
    """log p(pixel) in nats for every pixel: x (B, H, W, C) in [-1, 1], l (B, H, W, P) -> (B, H, W).

    Exactly the original's computation (docs/ORIGINAL.md §3), including its edge and tail cases.
    """
    log_probs, log_pi = _component_log_probs(x, l)
    log_probs = tf.reduce_sum(log_probs, axis=-2) + log_pi
    return _log_sum_exp(log_probs)                                # (B, H, W)


def subpixel_log_prob(x, l):
    """log p(x_ijc | everything before it) in nats: x (B, H, W, C) in [-1, 1], l (B, H, W, P)
    -> (B, H, W, C).

    Pixels in raster order, R -> G -> B inside a pixel. The mixture is over whole pixels, so
    a channel's conditional mixes the components by their posterior given the channels before
    it: with A_c = logsumexp_k(log pi_k + sum_{c' <= c} log p_k(x_c' | x_<c')), the term of
    channel c is A_c - A_{c-1} (A_{-1} = 0). The terms of a pixel sum to its log-probability
    (``discretized_mix_logistic_log_prob``); channel c's term depends on x's channels 0..c
    only. Grayscale: the pixel's log-probability, (B, H, W, 1).
    """
    log_probs, log_pi = _component_log_probs(x, l)
    C = log_probs.shape[-2]
    terms, previous, running = [], None, log_pi
    for c in range(C):
        running = running + log_probs[..., c, :]
        a = _log_sum_exp(running)                                 # log p(x_0..c), (B, H, W)
        terms.append(a if previous is None else a - previous)
        previous = a
    return tf.stack(terms, axis=-1)


def discretized_mix_logistic_loss(x, l, sum_all=True):
    """Negative log-likelihood in nats. x (B, H, W, C) in [-1, 1]; l (B, H, W, P).

    sum_all=True: a scalar, summed over everything; False: (B,), one NLL per image.
    """
    log_p = discretized_mix_logistic_log_prob(x, l)
    if sum_all:
        return -tf.reduce_sum(log_p)
    return -tf.reduce_sum(log_p, axis=[1, 2])


def nll_per_image(x, l):
    """(B,) NLL in nats of each image."""
    return discretized_mix_logistic_loss(x, l, sum_all=False)


def bits_per_dim(nats, num_images, image_shape):
    """Convert a summed NLL in nats over ``num_images`` images of ``image_shape`` (H, W, C),
    or code maps of shape (H, W): bits per sub-pixel, or per code."""
    dims = float(np.prod(image_shape)) * num_images
    return nats / (math.log(2.0) * dims)


def uniform_noise(shape, seed=None):
    """U(1e-5, 1 - 1e-5) noise as the original's sampler draws it.

    seed: None (global RNG), or a shape-(2,) int tensor / pair for stateless, reproducible draws.
    """
    if seed is None:
        return tf.random.uniform(shape, minval=1e-5, maxval=1.0 - 1e-5)
    return tf.random.stateless_uniform(shape, seed=seed, minval=1e-5, maxval=1.0 - 1e-5)


def sample_from_discretized_mix_logistic(l, nr_mix, num_channels=3, seed=None, noise=None,
                                         temperature=1.0):
    """Draw one value per pixel (docs/ORIGINAL.md §3): l (B, H, W, P) -> (B, H, W, C) in [-1, 1].

    The mixture component is picked by Gumbel-max with u_mix (B, H, W, M) and the logistic
    sample uses u (B, H, W, C), both U(1e-5, 1 - 1e-5). Pass ``noise=(u_mix, u)`` to supply
    them (the samplers do, so fast and naive generation see the same randomness), or ``seed``
    (a pair of ints) to draw them reproducibly; neither draws from the global RNG.
    Not rounded to 8 bits, as the original.

    temperature T (> 0): the mixture weights' logits are divided by T and every logistic's
    scale multiplied by T, so T < 1 draws closer to the likeliest component's mean and
    T = 1 is the model's own distribution (exactly: nothing is changed).
    """
    l = tf.cast(l, tf.float32)
    C = num_channels
    M, logit_probs, means, log_scales, coeffs = _unpack(l, C)
    if M != nr_mix:
        raise InvalidInputError(f"l has parameters for {M} mixture components, not nr_mix={nr_mix}")
    if noise is None:
        seeds = (None, None) if seed is None else tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
        noise = (uniform_noise(tf.shape(logit_probs), seeds[0]),
                 uniform_noise(tf.shape(means)[:-1], seeds[1]))
    u_mix, u = noise
    if temperature != 1.0:
        logit_probs = logit_probs / temperature
    sel = tf.one_hot(tf.argmax(logit_probs - tf.math.log(-tf.math.log(u_mix)), axis=-1),
                     depth=M, dtype=tf.float32)[..., None, :]       # (B, H, W, 1, M)
    means = tf.reduce_sum(means * sel, axis=-1)                      # (B, H, W, C)
    log_scales = tf.maximum(tf.reduce_sum(log_scales * sel, axis=-1), -7.0)
    scales = tf.exp(log_scales) if temperature == 1.0 else temperature * tf.exp(log_scales)
    x = means + scales * (tf.math.log(u) - tf.math.log(1.0 - u))
    if C == 1:
        return tf.clip_by_value(x, -1.0, 1.0)
    coeffs = tf.reduce_sum(coeffs * sel, axis=-1)
    x0 = tf.minimum(tf.maximum(x[..., 0], -1.0), 1.0)
    x1 = tf.minimum(tf.maximum(x[..., 1] + coeffs[..., 0] * x0, -1.0), 1.0)
    x2 = tf.minimum(tf.maximum(x[..., 2] + coeffs[..., 1] * x0 + coeffs[..., 2] * x1, -1.0), 1.0)
    return tf.stack([x0, x1, x2], axis=-1)


# ---------------------------------------------------------------- the K-way head over codes
def categorical_log_prob(codes, logits):
    """(B, H, W) log-probabilities (nats) of int codes (B, H, W) in [0, K) under logits
    (B, H, W, K), computed in float32."""
    logits = tf.cast(logits, tf.float32)
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(codes, tf.int32), logits=logits)


def categorical_loss(codes, logits, sum_all=True):
    """Cross-entropy in nats of the codes: summed over everything (sum_all) or (B,) per map."""
    log_p = categorical_log_prob(codes, logits)
    return -tf.reduce_sum(log_p) if sum_all else -tf.reduce_sum(log_p, axis=[1, 2])


def sample_categorical(logits, u, temperature=1.0):
    """One code per position: logits (..., K), u (..., K) uniform noise in (0, 1) -> (...,)
    int32, by Gumbel-max on logits / temperature (the softmax of logits / T; T = 1 is the
    model's own distribution)."""
    logits = tf.cast(logits, tf.float32)
    if temperature != 1.0:
        logits = logits / temperature
    return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)


def energy_distance_loss(x, samples):
    """The original's energy-distance objective (docs/ORIGINAL.md §2).

    x: (B, H, W, 3) in [-1, 1]; samples: (N, B, H, W, 3) (N = 10 from the model's head).
    2 mean_i S(x, x_i) - mean_{i<j} S(x_i, x_j), S(a, b) = sum over pixels of
    (1e-10 + sum over RGB of (127.5 (a - b))^2)^0.75.
    """
    x = tf.cast(x, tf.float32)
    samples = tf.cast(samples, tf.float32)
    n = samples.shape[0]

    def S(a, b):
        return tf.reduce_sum(tf.pow(1e-10 + tf.reduce_sum(tf.square(127.5 * (a - b)), -1), 0.75))

    data_term = tf.add_n([S(x, samples[i]) for i in range(n)]) / n
    pairs = [S(samples[i], samples[j]) for i in range(n) for j in range(i + 1, n)]
    return 2.0 * data_term - tf.add_n(pairs) / len(pairs)
