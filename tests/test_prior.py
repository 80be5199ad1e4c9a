"""PixelCNN++ as a prior: the K-way head over codes, global and spatial conditions, any size.

Each property is checked on tiny models: the joint over every code map of a small size sums
to one, the output at a position depends on no code at or after it (in raster order), the
spatial map reaches every position, padding is never seen."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from helpers import random_images, tiny_model

K = 3


def prior(**kw):
    cfg = dict(num_categories=K, nr_filters=8, dropout_p=0.0)
    cfg.update(kw)
    return tiny_model(**cfg)


def all_maps(H, W):
    return np.array(list(itertools.product(range(K), repeat=H * W))).reshape(-1, H, W)


@pytest.mark.parametrize("H, W", [(2, 2), (1, 3), (3, 1)])
def test_the_joint_over_every_code_map_sums_to_one(H, W):
    model = prior(h_dim=2, spatial_channels=2)
    maps = all_maps(H, W)
    n = len(maps)
    h = np.tile([[0.3, -1.2]], (n, 1)).astype(np.float32)
    s = np.tile(np.random.RandomState(0).randn(1, 1, 1, 2), (n, H, W, 1)).astype(np.float32)
    # The init on varied 4x4 maps: on maps of one row or column some layers see activations
    # that are constant over the batch, and the init's 1 / sqrt(v + 1e-10) would scale them
    # by ~1e5, turning float32 round-off into logits that differ across the batch.
    rng = np.random.RandomState(1)
    model.initialize(rng.randint(0, K, (8, 4, 4)), h=h[:1].repeat(8, 0),
                     spatial=rng.randn(8, 4, 4, 2).astype(np.float32))
    logits = model(maps, h=h, spatial=s)
    assert logits.shape == (n, H, W, K)
    per_position = tf.reduce_sum(tf.nn.softmax(logits), -1).numpy()
    np.testing.assert_allclose(per_position, 1.0, rtol=1e-6)
    nll = model.nll_per_image(maps, logits).numpy().astype(np.float64)
    np.testing.assert_allclose(np.exp(-nll).sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(model.objective(maps, logits).numpy(), nll.sum(), rtol=1e-5)
    log_p = model.subpixel_log_prob(maps, logits).numpy()
    np.testing.assert_allclose(-log_p.sum((1, 2)), nll, rtol=1e-5)


def _later_depend_only(model, x, perturb, H, W, **cond):
    """For every position p: perturbing the input at p changes no output at p or before it
    (raster order); returns the set of (p, q) pairs where output q changed."""
    base = model(x, **cond).numpy()
    changed = set()
    for p in range(H * W):
        y = perturb(x, p // W, p % W)
        out = model(y, **cond).numpy()
        diff = np.abs(out - base).reshape(len(x), H * W, -1).max(axis=(0, 2))
        for q in np.flatnonzero(diff > 1e-6):
            assert q > p, f"output {q} depends on input {p}"
            changed.add((p, q))
    return changed


@pytest.mark.parametrize("H, W", [(4, 4), (5, 7)])
def test_codes_are_causal_under_both_conditions(H, W):
    model = prior(h_dim=3, spatial_channels=2)
    rng = np.random.RandomState(1)
    x = rng.randint(0, K, (2, H, W))
    cond = dict(h=rng.randn(2, 3).astype(np.float32),
                spatial=rng.randn(2, 1, 1, 2).astype(np.float32))
    model.initialize(x, **cond)

    def perturb(x, i, j):
        y = x.copy()
        y[:, i, j] = (y[:, i, j] + 1) % K
        return y

    changed = _later_depend_only(model, x, perturb, H, W, **cond)
    assert (0, 1) in changed and (0, W) in changed and (W - 1, 2 * W - 1) in changed


def test_images_of_any_size_are_causal_by_gradients():
    model = tiny_model(nr_filters=8, dropout_p=0.0)
    x = tf.constant(random_images((1, 5, 7, 3), seed=2))
    model.initialize(x)
    for i, j in [(0, 0), (2, 3), (4, 6), (2, 6)]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x)[0, i, j]
        g = np.abs(tape.gradient(out, x).numpy()[0]).sum(-1)
        later = np.zeros((5, 7), bool)
        later[i, j:] = True
        later[i + 1:] = True
        assert not g[later].any(), (i, j)
        if (i, j) != (0, 0):
            assert g[~later].any()


def test_the_spatial_map_reaches_every_position_the_first_included():
    model = prior(spatial_channels=3)
    rng = np.random.RandomState(3)
    x = rng.randint(0, K, (1, 8, 8))
    s = rng.randn(1, 4, 4, 3).astype(np.float32)
    model.initialize(np.tile(x, (4, 1, 1)), spatial=rng.randn(4, 4, 4, 3).astype(np.float32))
    base = model(x, spatial=s).numpy()
    for i, j in [(0, 0), (3, 3), (0, 3)]:      # far corner, centre, first row's end
        t = s.copy()
        t[0, i, j] += 1.0
        moved = np.abs(model(x, spatial=t).numpy() - base).max(-1)[0]
        assert (moved > 1e-6).all(), (i, j, moved.min())


def test_a_global_condition_of_any_floats():
    model = prior(h_dim=4)
    rng = np.random.RandomState(4)
    x = rng.randint(0, K, (2, 4, 4))
    h = rng.randn(2, 4).astype(np.float32)
    model.initialize(x, h=h)
    a, b = model(x, h=h).numpy(), model(x, h=h + 0.5).numpy()
    assert np.abs(a - b).max() > 1e-4
    with pytest.raises(ValueError, match=r"\(B, 4\) floats"):
        model(x)
    with pytest.raises(ValueError, match=r"h must have shape \(B, 4\)"):
        model(x, h=h[:, :3])


def test_padding_is_never_seen():
    """A 7x5 map is padded to 8x8 inside the model; what the padding holds, and how much of
    it there is, changes no output at the map's positions."""
    model = prior(spatial_channels=2)
    rng = np.random.RandomState(5)
    x = rng.randint(0, K, (2, 7, 5))
    s = rng.randn(2, 7, 5, 2).astype(np.float32)
    model.initialize(x, spatial=s)
    want = model(x, spatial=s).numpy()
    assert want.shape == (2, 7, 5, K)
    one_hot = np.concatenate([np.eye(K)[x], np.ones((2, 7, 5, 1))], -1).astype(np.float32)
    for Hp, Wp in [(8, 8), (12, 16)]:
        padded = rng.randn(2, Hp, Wp, K + 1).astype(np.float32) * 3   # garbage in the padding
        padded[:, :7, :5] = one_hot
        out = model._forward(tf.constant(padded), (7, 5), None, tf.constant(s), False, None)
        np.testing.assert_allclose(out.numpy()[:, :7, :5], want, rtol=1e-5, atol=1e-5)


def test_bad_inputs_of_a_prior():
    model = prior(spatial_channels=2)
    x = np.zeros((1, 4, 4), np.int64)
    with pytest.raises(ValueError, match="integer codes"):
        model(tf.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="spatial map"):
        model(x)
    with pytest.raises(ValueError, match="whole numbers"):
        model(x, spatial=np.zeros((1, 3, 4, 2), np.float32))
    with pytest.raises(ValueError, match="num_categories must be >= 2"):
        prior(num_categories=1)
    with pytest.raises(ValueError, match="give one of them"):
        tiny_model(num_classes=3, h_dim=4)
