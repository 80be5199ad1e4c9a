"""The discretized logistic mixture: normalisation, edge bins, numerical safety; bits/dim and
the energy-distance loss."""

import math

import numpy as np
import pytest
import tensorflow as tf

import pixelcnn_pp
from pixelcnn_pp.likelihood import discretized_mix_logistic_log_prob

VALUES = ((np.arange(256) - 127.5) / 127.5).astype(np.float32)


def random_params(M, seed, spread=1.0):
    """One pixel's mixture parameters (10M,), with strong channel couplings."""
    rng = np.random.RandomState(seed)
    logits = rng.normal(size=M) * 2
    means = rng.uniform(-1.2, 1.2, size=(3, M)) * spread
    log_scales = rng.uniform(-4.5, -1.0, size=(3, M))
    coeffs = rng.normal(size=(3, M)) * 2
    rest = np.concatenate([means, log_scales, coeffs], axis=1)   # (3, 3M)
    return np.concatenate([logits, rest.reshape(-1)]).astype(np.float32)


def log_p_grid(params, r):
    """log p(r, g, b) for one R value r and all (g, b): (256, 256)."""
    g, b = np.meshgrid(VALUES, VALUES, indexing="ij")
    x = np.stack([np.full_like(g, VALUES[r]), g, b], axis=-1)[None]         # (1, 256, 256, 3)
    l = np.broadcast_to(params, (1, 256, 256, params.size))
    return discretized_mix_logistic_log_prob(x, l).numpy()[0].astype(np.float64)


def joint_probabilities(params):
    """p(r, g, b) over all 256^3 values: (256, 256, 256), in float64."""
    out = np.empty((256, 256, 256))
    for r0 in range(0, 256, 32):
        rs = np.arange(r0, r0 + 32)
        g, b = np.meshgrid(VALUES, VALUES, indexing="ij")
        x = np.stack([np.broadcast_to(VALUES[rs][:, None, None], (32, 256, 256)),
                      np.broadcast_to(g, (32, 256, 256)),
                      np.broadcast_to(b, (32, 256, 256))], axis=-1)
        l = np.broadcast_to(params, (32, 256, 256, params.size))
        out[r0:r0 + 32] = np.exp(discretized_mix_logistic_log_prob(x, l).numpy())
    return out


@pytest.mark.parametrize("M,seed", [(1, 0), (5, 2)])   # one component, and several
def test_the_joint_over_all_256_cubed_values_sums_to_one(M, seed):
    p = joint_probabilities(random_params(M, seed))
    assert p.sum() == pytest.approx(1.0, abs=2e-4)
    # Both edge bins carry their tails: with means near the edges they hold real mass.
    assert p[0].sum() > 0 and p[255].sum() > 0


def test_each_conditional_sums_to_one_for_every_conditioning_value():
    """sum_b p(r, g, b) cannot depend on B's parameters, and sum_{g,b} p(r, g, b) on neither
    G's nor B's: exactly when B | R, G and G | R are normalised for every (r, g)."""
    M = 3
    base = random_params(M, 3)
    other_b = base.copy()
    other_g = base.copy()
    rng = np.random.RandomState(4)
    rest = slice(M, None)

    def per_channel(p):
        return p[rest].reshape(3, 3 * M)

    per_channel(other_b)[2] = np.concatenate([rng.uniform(-1, 1, M), rng.uniform(-4, -1, M),
                                              rng.normal(size=M)])
    per_channel(other_b)[1, 2 * M + 1] = rng.normal()   # B's coupling coefficients c1, c2
    per_channel(other_b)[1, 2 * M + 2] = rng.normal()
    per_channel(other_g)[1] = per_channel(other_b)[1]
    per_channel(other_g)[1, :2 * M] = np.concatenate([rng.uniform(-1, 1, M),
                                                       rng.uniform(-4, -1, M)])
    for r in (0, 1, 100, 200, 254, 255):
        a = np.exp(log_p_grid(base, r))
        b = np.exp(log_p_grid(other_b, r))
        c = np.exp(log_p_grid(other_g, r))
        np.testing.assert_allclose(a.sum(axis=1), b.sum(axis=1), rtol=1e-4, atol=1e-12)
        assert a.sum() == pytest.approx(c.sum(), rel=1e-4)
        assert not np.allclose(a, b, rtol=1e-2)  # the change did change the joint


def test_edge_bins_take_the_whole_tail():
    """One component, R only: p(0) = sigmoid((x0 + 1/255 - mu)/s), p(255) = 1 - sigmoid(...)."""
    mu, log_s = 0.9, -2.0
    params = np.zeros(10, np.float32)
    # per channel (mean, log-scale, coupling); couplings 0 so R's value moves nothing else
    params[1:] = np.array([[mu, log_s, 0.0], [0.3, -3.0, 0.0], [-0.2, -3.0, 0.0]]).reshape(-1)
    x = np.array([[[[-1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]]]], np.float32)  # (1, 2, 1, 3)
    l = np.broadcast_to(params, (1, 2, 1, 10))
    lp = discretized_mix_logistic_log_prob(x, l).numpy()[0, :, 0]
    lp_0 = lp[0] - discretized_mix_logistic_log_prob(
        np.array([[[[0.3, 0.0, 0.0]]]], np.float32), params[None, None, None]).numpy().item()
    s = math.exp(log_s)
    sig = lambda z: 1 / (1 + math.exp(-z))
    # Compare R's own factor via the difference of the pixel with R = -1 vs R = 0.3 (same G, B).
    p_r0 = sig((-1 + 1 / 255 - mu) / s)
    p_r03 = sig((0.3 + 1 / 255 - mu) / s) - sig((0.3 - 1 / 255 - mu) / s)
    assert lp_0 == pytest.approx(math.log(p_r0) - math.log(p_r03), rel=1e-4)
    p_r255 = 1 - sig((1 - 1 / 255 - mu) / s)
    lp_255 = lp[1] - discretized_mix_logistic_log_prob(
        np.array([[[[0.3, 0.0, 0.0]]]], np.float32), params[None, None, None]).numpy().item()
    assert lp_255 == pytest.approx(math.log(p_r255) - math.log(p_r03), rel=1e-4)


def test_no_nan_or_inf_for_extreme_parameters():
    M = 4
    rng = np.random.RandomState(5)
    x = ((rng.randint(0, 256, size=(6, 4, 4, 3)) - 127.5) / 127.5).astype(np.float32)
    x[:, 0] = -1.0
    x[:, 1] = 1.0
    cases = []
    for log_scale in (-7.0, -30.0, 5.0):
        for logit in (50.0, -50.0):
            for mean in (-20.0, 20.0, 0.0):
                l = np.zeros((6, 4, 4, 10 * M), np.float32)
                l[..., :M] = logit * rng.choice([-1, 1], size=M)
                rest = l[..., M:].reshape(6, 4, 4, 3, 3 * M)
                rest[..., :M] = mean
                rest[..., M:2 * M] = log_scale
                rest[..., 2 * M:] = rng.choice([-50, 50], size=(3, M))
                l[..., M:] = rest.reshape(6, 4, 4, 9 * M)
                cases.append(l)
    for l in cases:
        lt = tf.constant(l)
        with tf.GradientTape() as tape:
            tape.watch(lt)
            loss = pixelcnn_pp.discretized_mix_logistic_loss(x, lt)
        grad = tape.gradient(loss, lt).numpy()
        assert np.isfinite(loss.numpy()), l[0, 0, 0, :8]
        assert np.all(np.isfinite(grad))


def test_per_image_loss_sums_to_the_total_and_bits_per_dim():
    rng = np.random.RandomState(6)
    x = ((rng.randint(0, 256, size=(3, 4, 8, 3)) - 127.5) / 127.5).astype(np.float32)
    l = rng.normal(size=(3, 4, 8, 20)).astype(np.float32)
    per = pixelcnn_pp.nll_per_image(x, l).numpy()
    total = float(pixelcnn_pp.discretized_mix_logistic_loss(x, l))
    assert per.shape == (3,)
    assert per.sum() == pytest.approx(total, rel=1e-6)
    assert pixelcnn_pp.bits_per_dim(total, 3, (4, 8, 3)) == pytest.approx(
        total / (math.log(2) * 3 * 4 * 8 * 3))


def test_a_uniform_mixture_gives_8_bits_per_dim_in_the_limit():
    """Very wide logistics spread mass evenly: about 8 bits per sub-pixel."""
    x = ((np.arange(256).reshape(1, 16, 16, 1).repeat(3, -1) - 127.5) / 127.5).astype(np.float32)
    l = np.zeros((1, 16, 16, 10), np.float32)
    l[..., 4:7] = 6.0   # log-scales: s = e^6 >> the [-1, 1] range
    nats = float(pixelcnn_pp.discretized_mix_logistic_loss(x, l))
    bpd = pixelcnn_pp.bits_per_dim(nats, 1, (16, 16, 3))
    assert 7.9 < bpd < 20  # inner bins ~8 bits; the edge bins hold half the mass each


def test_energy_distance_loss_matches_its_formula():
    rng = np.random.RandomState(7)
    x = rng.uniform(-1, 1, size=(2, 4, 4, 3)).astype(np.float32)
    s = rng.uniform(-1, 1, size=(10, 2, 4, 4, 3)).astype(np.float32)

    def S(a, b):
        return np.sum((1e-10 + np.sum((127.5 * (a.astype(np.float64) - b)) ** 2, -1)) ** 0.75)

    ref = 2 * np.mean([S(x, s[i]) for i in range(10)]) - np.mean(
        [S(s[i], s[j]) for i in range(10) for j in range(i + 1, 10)])
    assert float(pixelcnn_pp.energy_distance_loss(x, s)) == pytest.approx(ref, rel=1e-4)


def test_energy_distance_model_gives_ten_samples_and_finite_gradients():
    model = pixelcnn_pp.PixelCNNPP(nr_resnet=1, nr_filters=8, energy_distance=True,
                                   dropout_p=0.0, seed=0)
    x = np.random.RandomState(8).uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
    model.initialize(x)
    with tf.GradientTape() as tape:
        samples = model(x, training=True)
        loss = pixelcnn_pp.energy_distance_loss(x, samples)
    assert samples.shape == (10, 2, 8, 8, 3)
    assert np.all(np.abs(samples.numpy()) <= 1)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    from pixelcnn_pp.convert import tf1_variables
    assert "model/dense_" in " ".join(tf1_variables(model))
