"""The K-way head's likelihood and sampling (pixelcnn_pp/likelihood.py), and the mixture
sampler's temperature."""

import numpy as np
import tensorflow as tf

from pixelcnn_pp import likelihood as lk


def test_categorical_log_prob_is_the_log_softmax_at_the_code():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 3, 4, 5).astype(np.float32)
    codes = rng.randint(0, 5, (2, 3, 4))
    log_p = lk.categorical_log_prob(codes, logits).numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.take_along_axis(log_softmax, codes[..., None], -1)[..., 0]
    np.testing.assert_allclose(log_p, want, rtol=1e-5, atol=1e-6)
    per_map = lk.categorical_loss(codes, logits, sum_all=False).numpy()
    np.testing.assert_allclose(per_map, -want.sum((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(lk.categorical_loss(codes, logits).numpy(), -want.sum(), rtol=1e-5)
    # bits per code: per (H, W) position
    assert np.isclose(lk.bits_per_dim(12 * np.log(2), 1, (3, 4)), 1.0)


def test_sample_categorical_draws_the_softmax_and_temperature_sharpens_it():
    logits = np.log(np.array([0.5, 0.3, 0.2], np.float32))
    u = tf.random.stateless_uniform((20000, 3), [1, 2], minval=1e-6, maxval=1 - 1e-6)
    draws = lk.sample_categorical(np.broadcast_to(logits, (20000, 3)), u).numpy()
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.015)
    cold = lk.sample_categorical(np.broadcast_to(logits, (20000, 3)), u, temperature=0.5)
    p = np.array([0.5, 0.3, 0.2]) ** 2
    np.testing.assert_allclose(np.bincount(cold.numpy(), minlength=3) / 20000, p / p.sum(),
                               atol=0.015)


def test_mixture_temperature_one_changes_nothing_and_lower_narrows_the_draws():
    rng = np.random.RandomState(0)
    M = 3
    l = rng.randn(4, 5, 5, 10 * M).astype(np.float32)
    u_mix = tf.random.stateless_uniform((4, 5, 5, M), [3, 4], 1e-5, 1 - 1e-5)
    u = tf.random.stateless_uniform((4, 5, 5, 3), [5, 6], 1e-5, 1 - 1e-5)
    base = lk.sample_from_discretized_mix_logistic(l, M, noise=(u_mix, u)).numpy()
    same = lk.sample_from_discretized_mix_logistic(l, M, noise=(u_mix, u), temperature=1.0)
    np.testing.assert_array_equal(base, same.numpy())
    # One component, no colour coupling: the draw's distance from the mean scales with T.
    l1 = np.zeros((1, 1, 1, 10), np.float32)
    l1[..., [2, 5, 8]] = np.log(0.1)   # per channel (mean, log scale, coefficient)
    u1 = tf.constant(np.full((1, 1, 1, 3), 0.7, np.float32))
    um = tf.constant(np.full((1, 1, 1, 1), 0.5, np.float32))
    d1 = lk.sample_from_discretized_mix_logistic(l1, 1, noise=(um, u1)).numpy()
    d_half = lk.sample_from_discretized_mix_logistic(l1, 1, noise=(um, u1),
                                                     temperature=0.5).numpy()
    np.testing.assert_allclose(d_half, 0.5 * d1, rtol=1e-6)
