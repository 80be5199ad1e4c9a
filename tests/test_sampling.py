"""Sampling: fast (cached) sampling equals the original's naive loop; the pixel sampler draws
from the likelihood it is trained with.

Every equality test runs both methods on a tiny model with the same seed: the fast sampler
computes the same functions of the same sampled pixels in another order, so the images
agree to float round-off, and exactly once mapped to 8 bits.
"""

import gc
import math
import weakref

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import likelihood, plotting, sampling
from pixelcnn_pp.errors import InvalidInputError, UsageError
from pixelcnn_pp.model import PixelCNNPP
from pixelcnn_pp.optim import PolyakAverage
from pixelcnn_pp.sampling import position_noise, sample

_MODELS = {}


def tiny(nonlinearity="concat_elu", num_classes=None, energy_distance=False, channels=3,
         shape=(8, 12), nr_resnet=1):
    """A tiny data-initialised model, built once per configuration for the whole module."""
    key = (nonlinearity, num_classes, energy_distance, channels, shape, nr_resnet)
    if key not in _MODELS:
        model = PixelCNNPP(nr_resnet=nr_resnet, nr_filters=8, nr_logistic_mix=2,
                           resnet_nonlinearity=nonlinearity, dropout_p=0.0,
                           num_classes=num_classes, energy_distance=energy_distance,
                           num_channels=channels, seed=0)
        x = tf.random.stateless_uniform((4,) + shape + (channels,), (1, 2), -1.0, 1.0)
        h = tf.one_hot(np.arange(4) % num_classes, num_classes) if num_classes else None
        model.initialize(x, h=h, training=False)
        _MODELS[key] = model
    return _MODELS[key]


def labels(batch_size, num_classes):
    if not num_classes:
        return None
    return np.eye(num_classes, dtype=np.float32)[np.arange(batch_size) % num_classes]


def assert_same_images(naive, fast):
    assert naive.shape == fast.shape and naive.dtype == fast.dtype == np.float32
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-4)
    # Equal 8-bit images, except where round-off straddles a rounding boundary: the samplers
    # feed floats back (as the original, no rounding while sampling), so a value 1e-6 either
    # side of v + 0.5 rounds differently without the images having diverged (the float check
    # above would catch that).
    differ = plotting.images_to_uint8(fast) != plotting.images_to_uint8(naive)
    v = (naive.astype(np.float64) + 1.0) * 127.5
    at_boundary = np.abs(v - np.floor(v) - 0.5) < 0.01
    assert np.all(~differ | at_boundary), np.argwhere(differ & ~at_boundary)[:5]
    assert differ.mean() < 0.01


# Each nonlinearity, unconditional and conditional, 16x16 and 8x12, batch 1 and 3 (the
# energy-distance head and grayscale have their own tests below).
CONFIGS = [
    ("concat_elu", None, (16, 16), 1),
    ("elu", 3, (8, 12), 3),
    ("relu", 3, (16, 16), 3),
]


@pytest.mark.parametrize("nonlinearity,num_classes,shape,batch_size", CONFIGS)
def test_fast_equals_naive(nonlinearity, num_classes, shape, batch_size):
    model = tiny(nonlinearity, num_classes, shape=shape)
    h = labels(batch_size, num_classes)
    image_shape = shape + (3,)
    naive = sample(model, batch_size, image_shape, h=h, seed=7, method="naive")
    fast = sample(model, batch_size, image_shape, h=h, seed=7, method="fast")
    assert_same_images(naive, fast)
    assert fast.min() >= -1.0 and fast.max() <= 1.0
    # Not a degenerate sampler: pixels vary across the image.
    assert np.unique(plotting.images_to_uint8(fast)).size > 10


@pytest.mark.parametrize("nr_resnet", [1, 2, 3])
def test_fast_equals_naive_whatever_the_number_of_blocks(nr_resnet):
    """The fast sampler reads the layout (blocks per stage, R up and R, R+1, R+1 down) from
    the model."""
    model = tiny(nr_resnet=nr_resnet, shape=(8, 8))
    naive = sample(model, 2, (8, 8, 3), seed=4, method="naive")
    fast = sample(model, 2, (8, 8, 3), seed=4, method="fast")
    assert_same_images(naive, fast)


def test_samplers_are_cached_per_model_and_die_with_it():
    """A second call with the same shapes reuses the traced functions; the cache holds the
    model weakly."""
    model = PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=2, dropout_p=0.0, seed=0)
    model.initialize(tf.random.stateless_uniform((2, 4, 4, 3), (1, 2), -1.0, 1.0),
                     training=False)
    a = sample(model, 1, (4, 4, 3), seed=1)
    b = sample(model, 1, (4, 4, 3), seed=2)
    assert not np.array_equal(a, b)
    assert len(sampling._SAMPLERS[model]) == 1
    sampler = sampling._get_sampler(model, "fast", 1, 4, 4, False, False)
    assert sampler._groups[4].experimental_get_tracing_count() == 1
    gone = weakref.ref(model)
    del model, sampler
    gc.collect()
    assert gone() is None


def test_conditional_samples_depend_on_labels():
    model = tiny("elu", 3)
    a = sample(model, 3, (8, 12, 3), h=labels(3, 3), seed=7)
    b = sample(model, 3, (8, 12, 3), h=labels(3, 3)[[1, 2, 0]], seed=7)
    assert not np.array_equal(a, b)


def test_energy_distance_fast_equals_naive():
    model = tiny(energy_distance=True, shape=(8, 8))
    naive = sample(model, 1, (8, 8, 3), seed=3, method="naive")
    fast = sample(model, 1, (8, 8, 3), seed=3, method="fast")
    assert_same_images(naive, fast)
    assert np.abs(fast).max() < 1.0                   # tanh output, first of ten samples


def test_grayscale_fast_equals_naive():
    model = tiny(channels=1, shape=(8, 8))
    naive = sample(model, 3, (8, 8, 1), seed=5, method="naive")
    fast = sample(model, 3, (8, 8, 1), seed=5, method="fast")
    assert fast.shape == (3, 8, 8, 1)
    assert_same_images(naive, fast)


def test_xla_equals_plain():
    model = tiny("concat_elu", None, shape=(16, 16))
    plain = sample(model, 1, (16, 16, 3), seed=11, jit_compile=False)
    xla = sample(model, 1, (16, 16, 3), seed=11, jit_compile=True)
    assert_same_images(plain, xla)


def test_same_seed_same_images_other_seed_other_images():
    model = tiny("concat_elu", None, shape=(16, 16))
    a = sample(model, 1, (16, 16, 3), seed=7)
    b = sample(model, 1, (16, 16, 3), seed=7)
    c = sample(model, 1, (16, 16, 3), seed=8)
    np.testing.assert_array_equal(a, b)
    assert np.mean(plotting.images_to_uint8(a) != plotting.images_to_uint8(c)) > 0.5


def test_samples_with_polyak_averages_and_restores_weights():
    model = tiny("elu", 3, shape=(8, 12))
    averages = PolyakAverage(model.trainable_variables)
    trained = [v.numpy() for v in model.trainable_variables]
    rng = np.random.RandomState(0)
    averaged = [t * (1 + 0.3 * rng.randn(*t.shape)).astype(np.float32) for t in trained]
    averages.reset(averaged)
    h = labels(3, 3)
    got = sample(model, 3, (8, 12, 3), h=h, seed=2, averages=averages)
    for v, t in zip(model.trainable_variables, trained):
        np.testing.assert_array_equal(v.numpy(), t)
    for v, a in zip(model.trainable_variables, averaged):
        v.assign(a)
    try:
        expected = sample(model, 3, (8, 12, 3), h=h, seed=2)
    finally:
        for v, t in zip(model.trainable_variables, trained):
            v.assign(t)
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, sample(model, 3, (8, 12, 3), h=h, seed=2))


def test_position_noise():
    u_mix, u = position_noise(tf.constant(1, tf.int64), 2, 3, 12, 5, 4, 3)
    assert u_mix.shape == (5, 4) and u.shape == (5, 3)
    for t in (u_mix, u):
        assert np.all(t.numpy() >= 1e-5) and np.all(t.numpy() < 1 - 1e-5)
    again = position_noise(tf.constant(1, tf.int64), 2, 3, 12, 5, 4, 3)
    np.testing.assert_array_equal(u.numpy(), again[1].numpy())
    other = position_noise(tf.constant(1, tf.int64), 3, 2, 12, 5, 4, 3)
    assert not np.allclose(u.numpy(), other[1].numpy())


def test_argument_errors():
    model = tiny("elu", 3)
    with pytest.raises(UsageError, match="class-conditional"):
        sample(model, 2, (8, 12, 3))
    with pytest.raises(InvalidInputError, match=r"\(2, 3\)"):
        sample(model, 2, (8, 12, 3), h=labels(3, 3))
    with pytest.raises(InvalidInputError, match=">= 1"):       # any H, W >= 1 (odd too)
        sample(model, 3, (0, 10, 3), h=labels(3, 3))
    with pytest.raises(InvalidInputError, match="3-channel"):
        sample(model, 3, (8, 12, 1), h=labels(3, 3))
    with pytest.raises(UsageError, match="method"):
        sample(model, 3, (8, 12, 3), h=labels(3, 3), method="quick")
    with pytest.raises(UsageError, match="unconditional"):
        sample(tiny("concat_elu", None, shape=(16, 16)), 2, (16, 16, 3), h=labels(2, 3))
    with pytest.raises(InvalidInputError, match="seed"):
        sample(model, 3, (8, 12, 3), h=labels(3, 3), seed=1.5)
    with pytest.raises(InvalidInputError, match="batch_size"):
        sample(model, 0, (8, 12, 3), h=np.zeros((0, 3)))
    unbuilt = PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=2)
    with pytest.raises(UsageError, match="no weights"):
        sample(unbuilt, 1, (8, 8, 3))
    with pytest.raises(UsageError, match="baseline"):
        sample(object(), 1, (8, 8, 3))


# ---------------------------------------------------------------------------- pixel sampler
def _chi2_pvalue(observed, expected, min_expected=5.0):
    """Pearson chi-square p-value; bins expecting fewer than min_expected counts are pooled.
    Upper tail by the Wilson-Hilferty approximation (ample for thresholds like 1e-3)."""
    keep = expected >= min_expected
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] < min_expected:        # too little pooled mass to test: fold it into the rest
        obs, exp = obs[:-1], exp[:-1]
        obs[-1] += observed[~keep].sum()
        exp[-1] += expected[~keep].sum()
    stat = np.sum((obs - exp) ** 2 / exp)
    k = len(obs) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def _pixel_params(num_channels, pinned=None, shift=0.0):
    """Fixed mixture parameters for one pixel, (1, 1, 1, P) float64: three components, one
    near the top edge (so the edge bins carry mass), coupled colour channels. ``pinned``: a
    channel whose every component sits far above 1 with the smallest scale, so that it is
    255 with probability 1 (in the likelihood and in the sampler, which clips)."""
    logits = [0.3, -0.2, 0.1]
    means = np.array([[-0.35, 0.2, 0.97], [0.1, -0.5, 0.96], [0.4, 0.0, 0.98]]) + shift
    log_scales = np.array([[-2.5, -3.2, -3.5], [-2.8, -2.2, -3.5], [-3.0, -2.6, -3.4]])
    coeffs = np.array([[0.5, -0.8, 0.3], [0.7, 0.2, -0.4], [-0.6, 0.4, 0.9]])
    if pinned is not None:
        means[pinned], log_scales[pinned] = 3.0, -7.0
    rest = [means[:num_channels], log_scales[:num_channels]]
    if num_channels == 3:
        rest.append(np.arctanh(coeffs))
    l = np.concatenate([logits, np.stack(rest, axis=1).reshape(-1)])
    return l.reshape(1, 1, 1, -1)


def _exact_marginals(l, num_channels, pinned=None):
    """{channel: its distribution over the 256 values}, from exp(log p) of the likelihood
    itself. RGB: p is evaluated on all 256 x 256 values of the two free channels, with the
    pinned one at 255 (where all its mass is), and summed over the other free channel."""
    v = (np.arange(256) - 127.5) / 127.5
    if num_channels == 1:
        p = np.exp(likelihood.discretized_mix_logistic_log_prob(
            v.reshape(256, 1, 1, 1), np.repeat(l, 256, axis=0)).numpy().reshape(256))
        assert abs(p.sum() - 1.0) < 1e-5
        return {0: p}
    a, b = [c for c in range(3) if c != pinned]
    x = np.ones((256, 256, 3))
    x[..., a], x[..., b] = v[:, None], v[None, :]
    p = np.exp(likelihood.discretized_mix_logistic_log_prob(
        x.reshape(-1, 1, 1, 3), np.repeat(l, 256 * 256, axis=0)).numpy().reshape(256, 256))
    # The pinned channel holds no other mass (the rest: the likelihood's density
    # approximation for bins of mass below 1e-5).
    assert abs(p.sum() - 1.0) < 1e-5
    return {a: p.sum(1), b: p.sum(0)}


@pytest.mark.parametrize("num_channels,pinned", [(3, 2), (3, 0), (3, 1), (1, None)])
def test_pixel_sampler_draws_from_the_likelihood(num_channels, pinned):
    """Histograms of 8-bit-rounded samples against exp(log p) over the 256 values of each
    channel (chi-square). Pinning one channel at a time keeps the exact marginals cheap and
    still exercises every coupling: R -> G (B pinned), G -> B (R pinned), R -> B (G pinned)."""
    l = _pixel_params(num_channels, pinned)
    n, M = 40000, 3
    x = likelihood.sample_from_discretized_mix_logistic(
        tf.constant(np.repeat(l, n, axis=0), tf.float32), M, num_channels, seed=(4, 5))
    values = plotting.images_to_uint8(x.numpy()).reshape(n, num_channels)
    if pinned is not None:
        assert np.all(values[:, pinned] == 255)
    exact = _exact_marginals(l, num_channels, pinned)
    shifted = _exact_marginals(_pixel_params(num_channels, pinned, shift=3.0 / 255),
                               num_channels, pinned)
    for c in exact:
        counts = np.bincount(values[:, c], minlength=256)
        assert _chi2_pvalue(counts, n * exact[c]) > 1e-3, f"channel {c}"
        # The test has power: means off by three 8-bit steps are rejected.
        assert _chi2_pvalue(counts, n * shifted[c]) < 1e-6, f"channel {c}"


def test_sample_speed_benchmark_runs_with_its_profile(tmp_path):
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "speed.json"
    p = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "sample_speed.py"),
                        "--nr_resnet", "1", "--nr_filters", "8", "--nr_logistic_mix", "2",
                        "--sizes", "8", "--batch_sizes", "2", "--xla", "off", "--repeats", "1",
                        "--profile", "--out", str(out)],
                       cwd=root, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["model"]["fast_ops"] is True
    run = r["runs"][0]
    assert run["fast_s"] > 0 and run["naive_s"] > 0
    prof = run["profile"]
    assert len(prof["row_s"]) == len(prof["row_level_s"]) == 3
    assert prof["pixel_loop_s_per_step"] > 0
    # The floors of the two parts on this machine (docs/SAMPLING.md).
    assert prof["ul_weight_mb_per_step"] > 0 and prof["matvec_s_same_bytes"] > 0
    assert prof["pixel_loop_floor_s"] > 0 and prof["row_matmul_gflop_s"] > 0
