"""Grayscale PixelCNN++ (num_channels=1): the network, its 3M-parameter likelihood, sampling."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import optim
from pixelcnn_pp.likelihood import (discretized_mix_logistic_log_prob,
                                    discretized_mix_logistic_loss,
                                    sample_from_discretized_mix_logistic)
from pixelcnn_pp.model import PixelCNNPP

M = 3                                    # mixture components in these tests


def tiny_model(num_channels=1, dropout_p=0.0):
    keras.utils.set_random_seed(0)
    return PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=M, dropout_p=dropout_p,
                      num_channels=num_channels, seed=0)


def grid_images(shape, seed=0):
    """Random 8-bit images as float32 in [-1, 1]."""
    v = np.random.RandomState(seed).randint(0, 256, size=shape)
    return ((v - 127.5) / 127.5).astype(np.float32)


def random_params(rng, batch, nr_mix=M):
    """Random grayscale mixture parameters, (batch, 3M): logits, means, log-scales. Means reach
    past the edges (so the edge bins hold real tails), log-scales from very sharp (the -7
    clamp) to wider than the whole range."""
    logits = rng.normal(0, 2, size=(batch, nr_mix))
    means = rng.uniform(-1.5, 1.5, size=(batch, nr_mix))
    log_scales = rng.uniform(-8.0, 1.0, size=(batch, nr_mix))
    return np.concatenate([logits, means, log_scales], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------- network
def test_output_shape():
    m = tiny_model()
    out = m(grid_images((2, 8, 12, 1)))
    assert out.shape == (2, 8, 12, 3 * M) and out.dtype == tf.float32
    assert np.all(np.isfinite(out.numpy()))
    with pytest.raises(ValueError):
        m(grid_images((2, 8, 12, 3)))


def test_causality_by_gradients():
    m = tiny_model()
    m.initialize(grid_images((4, 8, 8, 1), seed=1))
    B, H, W = 2, 8, 8
    x = tf.Variable(grid_images((B, H, W, 1), seed=2))
    w = tf.constant(np.random.RandomState(3).normal(size=3 * M).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(m(x) * w, axis=-1)                     # (B, H, W)
    J = tape.jacobian(y, x).numpy()[..., 0]                      # (B, H, W, B, H, W)
    order = np.arange(H * W).reshape(H, W)                       # raster position
    tol = 1e-6 * np.abs(J).max()
    for b in range(B):
        for i in range(H):
            for j in range(W):
                g = J[b, i, j]                                   # (B, H, W)
                others = np.delete(g, b, axis=0)
                assert np.all(np.abs(others) <= tol), "depends on another image"
                later = order >= order[i, j]                     # itself, and after it
                assert np.all(np.abs(g[b][later]) <= tol), f"({i}, {j}) sees its future"
                if j > 0:
                    assert abs(g[b, i, j - 1]) > tol, f"({i}, {j}) ignores its left neighbour"
                if i > 0:
                    assert abs(g[b, i - 1, j]) > tol, f"({i}, {j}) ignores the pixel above"


def test_rgb_model_unaffected():
    keras.utils.set_random_seed(0)
    m = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=M, num_channels=3)
    x = grid_images((2, 8, 8, 3))
    out = m(x)
    assert out.shape == (2, 8, 8, 10 * M)
    assert discretized_mix_logistic_loss(x, out, sum_all=False).shape == (2,)
    with pytest.raises(ValueError):
        m(grid_images((2, 8, 8, 1)))


# ---------------------------------------------------------------------------- likelihood
def test_likelihood_normalises():
    """For random parameters the 256 values' probabilities sum to 1, edge bins included."""
    rng = np.random.RandomState(0)
    K = 64
    values = ((np.arange(256) - 127.5) / 127.5).astype(np.float32).reshape(1, 16, 16, 1)
    x = tf.broadcast_to(values, (K, 16, 16, 1))
    l = tf.broadcast_to(random_params(rng, K)[:, None, None, :], (K, 16, 16, 3 * M))
    log_p = discretized_mix_logistic_log_prob(x, l)               # (K, 16, 16)
    assert log_p.shape == (K, 16, 16)
    total = np.exp(log_p.numpy().astype(np.float64)).reshape(K, 256).sum(axis=1)
    np.testing.assert_allclose(total, 1.0, atol=2e-3)
    # Away from the sharpest components (whose tiny bins use the density approximation) the
    # sum is 1 to float32 round-off.
    l_wide = random_params(rng, K)
    l_wide[:, 2 * M:] = rng.uniform(-4.0, 1.0, size=(K, M))
    log_p = discretized_mix_logistic_log_prob(
        x, tf.broadcast_to(l_wide[:, None, None, :], (K, 16, 16, 3 * M)))
    total = np.exp(log_p.numpy().astype(np.float64)).reshape(K, 256).sum(axis=1)
    np.testing.assert_allclose(total, 1.0, atol=1e-4)


def test_edge_bins_hold_the_tails():
    def log_p(value, mean, log_scale=-2.0):
        l = np.array([0.0, mean, log_scale], np.float32).reshape(1, 1, 1, 3)
        x = np.full((1, 1, 1, 1), value, np.float32)
        return discretized_mix_logistic_log_prob(x, l).numpy().item()

    # A component centred far below the range puts (nearly) all its mass on value 0, and
    # one far above on value 255: the edge bins extend to -inf and +inf.
    assert log_p(-1.0, -3.0) > -1e-6 and log_p(1.0, -3.0) < -20.0
    assert log_p(1.0, 3.0) > -1e-6 and log_p(-1.0, 3.0) < -20.0


# ---------------------------------------------------------------------------- sampling
def test_sample_one_value_in_range_and_seeded():
    rng = np.random.RandomState(1)
    l = tf.constant(random_params(rng, 2 * 8 * 8).reshape(2, 8, 8, 3 * M))
    a = sample_from_discretized_mix_logistic(l, M, num_channels=1, seed=(1, 2)).numpy()
    b = sample_from_discretized_mix_logistic(l, M, num_channels=1, seed=(1, 2)).numpy()
    c = sample_from_discretized_mix_logistic(l, M, num_channels=1, seed=(1, 3)).numpy()
    assert a.shape == (2, 8, 8, 1)
    assert a.min() >= -1.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sampler_agrees_with_likelihood():
    """Samples rounded to the 8-bit grid follow exp(log_prob) of the same parameters (the
    sampler and the likelihood read l the same way)."""
    rng = np.random.RandomState(2)
    params = random_params(rng, 1)
    params[0, 2 * M:] = [-3.0, -2.5, -1.5]                        # spread over many bins
    params[0, M:2 * M] = [-0.97, 0.1, 0.6]                        # one near the lower edge
    n_side = (100, 200)
    l = tf.broadcast_to(params.reshape(1, 1, 1, 3 * M), (1,) + n_side + (3 * M,))
    xs = sample_from_discretized_mix_logistic(l, M, num_channels=1, seed=(5, 0)).numpy()
    counts = np.bincount(np.round((xs.ravel() + 1) * 127.5).astype(int), minlength=256)
    values = ((np.arange(256) - 127.5) / 127.5).astype(np.float32).reshape(1, 16, 16, 1)
    probs = np.exp(discretized_mix_logistic_log_prob(
        values, tf.broadcast_to(params.reshape(1, 1, 1, 3 * M), (1, 16, 16, 3 * M))).numpy()
        .astype(np.float64)).ravel()
    assert counts[0] > 100                                         # the edge bin is exercised
    expected = probs / probs.sum() * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    stat = np.sum((obs - exp) ** 2 / exp)
    df = len(obs) - 1
    crit = df * (1 - 2 / (9 * df) + 3.72 * math.sqrt(2 / (9 * df))) ** 3   # p ~ 1e-4
    assert stat < crit, (stat, crit)


# ---------------------------------------------------------------------------- training
def test_training_lowers_the_loss():
    m = tiny_model()
    # Structured data: horizontal stripes of two grey levels.
    rows = np.where(np.arange(8) % 2 == 0, 200, 40)
    v = np.broadcast_to(rows[None, :, None, None], (4, 8, 8, 1))
    x = tf.constant(((v - 127.5) / 127.5).astype(np.float32))
    m.initialize(x)
    opt = optim.Adam(learning_rate=1e-3)
    before = float(discretized_mix_logistic_loss(x, m(x)))
    # Eager steps: tracing this model's gradient costs far more than ten steps.
    for _ in range(10):
        with tf.GradientTape() as tape:
            loss = discretized_mix_logistic_loss(x, m(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, m.trainable_weights), m.trainable_weights))
    after = float(discretized_mix_logistic_loss(x, m(x)))
    assert math.isfinite(after) and after < 0.95 * before, (before, after)
