"""The PixelCNN baseline: masks, causality by gradients, softmax likelihood, exact sampling."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import optim
from pixelcnn_pp.baseline import MaskedConv2D, PixelCNN, causal_mask, sample, softmax_log_prob
from pixelcnn_pp.likelihood import bits_per_dim


def make_model(num_channels=3, num_layers=2, num_filters=12, residual=True, seed=0,
               image_hw=(5, 5)):
    """A tiny built PixelCNN whose logits are far from uniform (random output biases, a
    scaled output kernel), so that likelihood and sampling tests have something to see."""
    keras.utils.set_random_seed(seed)
    m = PixelCNN(num_layers=num_layers, num_filters=num_filters, num_channels=num_channels,
                 residual=residual)
    m.initialize(tf.zeros((1,) + image_hw + (num_channels,)))
    rng = np.random.RandomState(seed)
    m.conv_out2.bias.assign(rng.normal(0, 2.0, m.conv_out2.bias.shape).astype(np.float32))
    m.conv_out2.kernel.assign(m.conv_out2.kernel * 4.0)
    return m


def grid_images(shape, seed=0):
    """Random images on the 8-bit grid, float32 in [-1, 1]."""
    v = np.random.RandomState(seed).randint(0, 256, size=shape)
    return ((v - 127.5) / 127.5).astype(np.float32)


def jacobian(fn, x):
    """d fn(x)[b, i, j, c] / d x[b', i', j', c']: (B, H, W, C, B, H, W, C) numpy."""
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = fn(x)
    return tape.jacobian(y, x).numpy()


def project(logits, seed=1):
    """(B, H, W, C, 256) -> (B, H, W, C): a fixed random projection of the 256 logits (a plain
    sum could cancel)."""
    w = tf.constant(np.random.RandomState(seed).normal(size=256).astype(np.float32))
    return tf.reduce_sum(logits * w, axis=-1)


def allowed(shape, see_own_channel=False):
    """Boolean (B, H, W, C, B, H, W, C): may output sub-pixel (b, i, j, c) depend on input
    (b', i', j', c')? Same image, an earlier pixel in raster order, or the same pixel and an
    earlier channel (or the same channel too, with ``see_own_channel``)."""
    B, H, W, C = shape
    out = np.zeros(shape + shape, bool)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                out[b, i, j, :, b, :i] = True
                out[b, i, j, :, b, i, :j] = True
                for c in range(C):
                    out[b, i, j, c, b, i, j, :c + 1 if see_own_channel else c] = True
    return out


def assert_zero_outside(J, ok):
    # Masked taps contribute exact zeros on the reference CPU kernels; a small relative
    # tolerance keeps the test meaningful for conv algorithms that transform the kernel.
    tol = 1e-6 * np.abs(J).max()
    leaks = np.argwhere((np.abs(J) > tol) & ~ok)
    assert leaks.size == 0, f"information leaks (output idx, input idx): {leaks[:5]}"


# ---------------------------------------------------------------------------- masks
def test_masks_3x3_rgb():
    for mask_type, centre in [
            # centre[i, o]: input channel i -> output channel o (R, G, B)
            ("A", [[0, 1, 1],
                   [0, 0, 1],
                   [0, 0, 0]]),
            ("B", [[1, 1, 1],
                   [0, 1, 1],
                   [0, 0, 1]])]:
        m = causal_mask((3, 3), 3, 3, mask_type, num_channels=3)
        assert m.shape == (3, 3, 3, 3)
        expected = np.zeros((3, 3, 3, 3), np.float32)
        expected[0] = 1.0                  # the row above: every channel to every channel
        expected[1, 0] = 1.0               # the pixel to the left
        expected[1, 1] = centre
        np.testing.assert_array_equal(m, expected)


def test_masks_3x3_groups_and_grayscale():
    # 6 input features in groups R R G G B B -> 3 outputs R G B, mask A: G sees the R
    # features, B sees R and G features, R sees none.
    m = causal_mask((3, 3), 6, 3, "A", num_channels=3)
    np.testing.assert_array_equal(m[1, 1], [[0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1],
                                            [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(m[1, 2], np.zeros((6, 3)))
    np.testing.assert_array_equal(m[2], np.zeros((3, 6, 3)))
    # Grayscale: mask A hides the centre, mask B shows it.
    spatial_a = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], np.float32)
    spatial_b = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(causal_mask((3, 3), 1, 2, "A", 1),
                                  np.broadcast_to(spatial_a[:, :, None, None], (3, 3, 1, 2)))
    np.testing.assert_array_equal(causal_mask((3, 3), 1, 2, "B", 1),
                                  np.broadcast_to(spatial_b[:, :, None, None], (3, 3, 1, 2)))
    # The output logits: 256 per channel, in channel order.
    g = causal_mask((1, 1), 6, 3 * 256, "B")[0, 0]
    assert (g[:, :256].sum(0) == 2).all() and (g[:, 256:512].sum(0) == 4).all()
    assert (g[:, 512:].sum(0) == 6).all()
    with pytest.raises(ValueError):
        causal_mask((2, 3), 3, 3, "A")


def test_mask_is_a_constant_applied_in_the_forward_pass():
    keras.utils.set_random_seed(0)
    layer = MaskedConv2D(6, 3, "A", num_channels=3)
    x = tf.constant(grid_images((2, 4, 4, 3)))
    y = layer(x)
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
    assert not layer.non_trainable_weights
    # Whatever the kernel holds at masked taps is ignored, and calls do not change it.
    k = layer.kernel.numpy()
    junk = np.where(layer.kernel_mask == 0, 100.0, k).astype(np.float32)
    layer.kernel.assign(junk)
    np.testing.assert_allclose(layer(x).numpy(), y.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer.kernel.numpy(), junk)
    # ...and gets no gradient there.
    with tf.GradientTape() as tape:
        s = tf.reduce_sum(layer(x) ** 2)
    g = tape.gradient(s, layer.kernel).numpy()
    assert np.all(g[layer.kernel_mask == 0] == 0) and np.any(g[layer.kernel_mask == 1] != 0)


# ---------------------------------------------------------------------------- causality
@pytest.mark.parametrize("residual", [True, False])
def test_causality_rgb(residual):
    m = make_model(residual=residual, num_filters=24, image_hw=(4, 4))
    x = grid_images((3, 4, 4, 3), seed=3)
    J = jacobian(lambda v: project(m(v)), x)
    assert_zero_outside(J, allowed(x.shape))
    # Dependencies that must exist. A ReLU can switch a path off for one input, so each is
    # asked of some image of the batch.
    R, G, B = 0, 1, 2
    own = np.stack([J[b, :, :, :, b] for b in range(3)])      # (3, H, W, C_out, H, W, C_in)
    for i, j in [(0, 0), (2, 2), (3, 1), (1, 3)]:
        o = own[:, i, j, :, i, j]                             # [image, output ch, input ch]
        assert np.all(o[:, R] == 0)                           # R sees none of its own pixel
        assert np.any(o[:, G, R] != 0) and np.all(o[:, G, G:] == 0)  # G sees R only
        assert np.any(o[:, B, R] != 0) and np.any(o[:, B, G] != 0)   # B sees R and G
        assert np.all(o[:, B, B] == 0)
        if j > 0:                                             # the left neighbour, every channel
            assert np.all(np.any(own[:, i, j, :, i, j - 1] != 0, axis=0))
        if i > 0:                                             # the upper neighbour
            assert np.all(np.any(own[:, i, j, :, i - 1, j] != 0, axis=0))


def test_mask_b_layers_pass_own_channel_mask_a_does_not():
    keras.utils.set_random_seed(0)
    x = grid_images((1, 4, 4, 3), seed=4)
    # Linear stacks (no ReLU to switch paths off): the masks alone decide what flows.
    stack_b = keras.Sequential([MaskedConv2D(6, 3, "B"), MaskedConv2D(3, 3, "B")])
    stack_a = keras.Sequential([MaskedConv2D(6, 3, "A"), MaskedConv2D(3, 3, "B")])
    Jb = jacobian(stack_b, x)
    Ja = jacobian(stack_a, x)
    assert_zero_outside(Jb, allowed(x.shape, see_own_channel=True))
    assert_zero_outside(Ja, allowed(x.shape, see_own_channel=False))
    for c in range(3):
        assert Jb[0, 2, 2, c, 0, 2, 2, c] != 0                # own channel flows through B
        assert Ja[0, 2, 2, c, 0, 2, 2, c] == 0                # but never through A


def test_causality_grayscale():
    m = make_model(num_channels=1, num_filters=16, image_hw=(4, 4))
    x = grid_images((3, 4, 4, 1), seed=5)
    out = m(x)
    assert out.shape == (3, 4, 4, 1, 256)
    J = jacobian(lambda v: project(m(v)), x)
    assert_zero_outside(J, allowed(x.shape))
    assert np.all(J[:, 2, 2, 0, :, 2, 2, 0] == 0)              # not itself
    assert np.any(J[[0, 1, 2], 2, 2, 0, [0, 1, 2], 2, 1, 0] != 0)   # left
    assert np.any(J[[0, 1, 2], 2, 2, 0, [0, 1, 2], 1, 2, 0] != 0)   # up


# ---------------------------------------------------------------------------- likelihood
def test_softmax_likelihood_normalises_given_the_rest():
    m = make_model(image_hw=(4, 4))
    base = grid_images((1, 4, 4, 3), seed=6)
    for (i, j, c) in [(0, 0, 0), (2, 1, 1), (3, 3, 2)]:
        xs = np.repeat(base, 256, axis=0)
        xs[:, i, j, c] = (np.arange(256) - 127.5) / 127.5          # every value of one sub-pixel
        logits = m(xs)
        # Its own value does not move its logits...
        np.testing.assert_allclose(logits[:, i, j, c].numpy(),
                                   np.repeat(logits[:1, i, j, c].numpy(), 256, 0), atol=1e-5)
        # ...and the 256 probabilities sum to 1 (every value maps to its own label).
        lp = softmax_log_prob(xs, logits)[:, i, j, c].numpy()
        assert lp.std() > 0.5                                       # far from uniform
        assert abs(np.logaddexp.reduce(lp.astype(np.float64))) < 1e-5
        # The per-image NLL is the sum of the sub-pixel terms.
        np.testing.assert_allclose(m.nll_per_image(xs, logits).numpy(),
                                   -softmax_log_prob(xs, logits).numpy().sum(axis=(1, 2, 3)),
                                   rtol=1e-5)


def test_nll_units_and_bits_per_dim():
    x = grid_images((3, 2, 2, 3), seed=7)
    logits = tf.zeros((3, 2, 2, 3, 256))                           # uniform: 8 bits per dim
    m = PixelCNN(num_layers=1, num_filters=6)                      # the likelihood needs no weights
    nats = m.objective(x, logits)
    assert nats.dtype == tf.float32 and nats.shape == ()
    np.testing.assert_allclose(nats.numpy(), 36 * math.log(256.0), rtol=1e-6)
    np.testing.assert_allclose(bits_per_dim(nats, 3, (2, 2, 3)), 8.0, rtol=1e-6)
    np.testing.assert_allclose(m.nll_per_image(x, logits).numpy(),
                               [12 * math.log(256.0)] * 3, rtol=1e-6)
    np.testing.assert_allclose(m.subpixel_log_prob(x, logits).numpy(),
                               np.full((3, 2, 2, 3), -math.log(256.0)), rtol=1e-6)
    # Values map to labels by rounding: the label's logit is what counts.
    lg = np.zeros((1, 1, 1, 1, 256), np.float32)
    lg[..., 200] = 50.0
    assert m.objective(np.full((1, 1, 1, 1), (200 - 127.5) / 127.5 + 0.003), lg) < 1e-6


# ---------------------------------------------------------------------------- sampling
def test_sampling_seeded_on_grid_and_in_range():
    m = make_model(image_hw=(3, 3))
    a = sample(m, 2, (3, 3, 3), seed=0).numpy()
    b = sample(m, 2, (3, 3, 3), seed=0).numpy()
    c = sample(m, 2, (3, 3, 3), seed=1).numpy()
    assert a.shape == (2, 3, 3, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])
    assert a.min() >= -1.0 and a.max() <= 1.0
    v = (a + 1.0) * 127.5
    np.testing.assert_allclose(v, np.round(v), atol=1e-3)


def test_sampling_matches_a_naive_loop():
    """The compiled loop draws the same images as the plain Python loop over sub-pixels in
    raster and R, G, B order, each conditioned on all earlier draws."""
    m = make_model(image_hw=(2, 3))
    H, W, C = 2, 3, 3
    seed = tf.constant([7, 0], tf.int64)
    x = np.zeros((4, H, W, C), np.float32)
    for t in range(H * W * C):
        i, j, c = t // C // W, t // C % W, t % C
        logits = m(x)[:, i, j, c]
        s = tf.random.experimental.stateless_fold_in(seed, tf.constant(t, tf.int64))
        x[:, i, j, c] = (tf.random.stateless_categorical(logits, 1, s)[:, 0].numpy()
                         - 127.5) / 127.5
    got = sample(m, 4, (H, W, C), seed=7).numpy()
    np.testing.assert_array_equal(np.round((got + 1) * 127.5), np.round((x + 1) * 127.5))


def chi_square_ok(counts, probs, z=3.72):
    """Pearson's test at about p = 1e-4 (Wilson-Hilferty), bins with expected count < 5
    pooled."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    stat = np.sum((obs - exp) ** 2 / np.maximum(exp, 1e-12))
    df = len(obs) - 1
    crit = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat < crit, stat, crit


def test_sampling_is_exact():
    """One-pixel images: R is drawn from softmax(logits), G from its mixture over R."""
    m = make_model(image_hw=(1, 1))
    # A tiny random net is nearly linear in x with small slopes: steepen its output layer so
    # that G leans on R strongly (R's logits, on the all-zeros image, are its biases alone).
    m.conv_out2.kernel.assign(m.conv_out2.kernel * 300.0)
    n = 20000
    xs = sample(m, n, (1, 1, 3), seed=3).numpy()[:, 0, 0]
    vals = np.round((xs + 1) * 127.5).astype(int)                   # (n, 3)
    counts_r = np.bincount(vals[:, 0], minlength=256)
    counts_g = np.bincount(vals[:, 1], minlength=256)

    def softmax(logits):
        p = tf.nn.softmax(logits).numpy().astype(np.float64)
        return p / p.sum(-1, keepdims=True)

    p_r = softmax(m(tf.zeros((1, 1, 1, 3)))[0, 0, 0, 0])
    ok, stat, crit = chi_square_ok(counts_r, p_r)
    assert ok, (stat, crit)
    given_r = np.zeros((256, 1, 1, 3), np.float32)
    given_r[:, 0, 0, 0] = (np.arange(256) - 127.5) / 127.5
    p_g = p_r @ softmax(m(given_r)[:, 0, 0, 1])
    ok, stat, crit = chi_square_ok(counts_g, p_g)
    assert ok, (stat, crit)
    # The test has power: an off-by-one in the value mapping, or G drawn without
    # conditioning on the R just drawn (from the all-zeros image), would fail it.
    assert not chi_square_ok(np.bincount(np.minimum(vals[:, 0] + 1, 255), minlength=256),
                             p_r)[0]
    assert not chi_square_ok(counts_g, softmax(m(tf.zeros((1, 1, 1, 3)))[0, 0, 0, 1]))[0]


def test_sampling_grayscale():
    m = make_model(num_channels=1, num_filters=8, image_hw=(3, 4))
    a = sample(m, 3, (3, 4, 1), seed=2).numpy()
    assert a.shape == (3, 3, 4, 1)
    assert a.min() >= -1.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, sample(m, 3, (3, 4, 1), seed=2).numpy())
    with pytest.raises(ValueError):
        sample(m, 1, (3, 4, 3))


def _fit(m, x, steps):
    """(objective before, after) ``steps`` Adam steps (lr 1e-2) on the batch x."""
    m.initialize(x)
    opt = optim.Adam(learning_rate=1e-2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            nll = m.objective(x, m(x, training=True))
        opt.apply_gradients(zip(tape.gradient(nll, m.trainable_weights), m.trainable_weights))
        return nll

    before = float(m.objective(x, m(x)))
    for _ in range(steps):
        step()
    return before, float(m.objective(x, m(x)))


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("num_channels", [3, 1])
def test_training_lowers_the_loss(num_channels):
    keras.utils.set_random_seed(0)
    m = PixelCNN(num_layers=1, num_filters=12, num_channels=num_channels)
    # Structured data: every sub-pixel is black or white.
    x = tf.constant(np.sign(np.random.RandomState(0).normal(
        size=(8, 4, 4, num_channels))).astype(np.float32))
    before, after = _fit(m, x, steps=30)
    assert math.isfinite(after) and after < 0.5 * before, (before, after)


def test_checkpoint_round_trip(tmp_path):
    """Every weight, the blocks' included, is in a tf.train.Checkpoint (resume-safe)."""
    a = make_model(num_layers=3, image_hw=(4, 4))
    keras.utils.set_random_seed(1)
    b = PixelCNN(num_layers=3, num_filters=12, num_channels=3)
    x = grid_images((2, 4, 4, 3), seed=8)
    b(x)
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    saved = [n for n, _ in tf.train.list_variables(path) if n.startswith("model/")]
    assert len(saved) == len(a.weights) == 2 * (3 + 3 * 3)       # kernel, bias of 12 convs
    tf.train.Checkpoint(model=b).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(b(x).numpy(), a(x).numpy())


def test_bad_arguments():
    with pytest.raises(ValueError):
        PixelCNN(num_channels=2)
    with pytest.raises(ValueError):
        PixelCNN(num_filters=4, num_channels=3)
    m = PixelCNN(num_layers=1, num_filters=6, num_channels=3)
    with pytest.raises(ValueError):
        m(tf.zeros((1, 4, 4, 1)))


# ---------------------------------------------------------------------------- codes
def make_code_model(K=3, num_layers=2, num_filters=12, residual=True, seed=0, hw=(4, 4)):
    """A tiny built K-way PixelCNN with far-from-uniform logits (as make_model)."""
    keras.utils.set_random_seed(seed)
    m = PixelCNN(num_layers=num_layers, num_filters=num_filters, residual=residual,
                 num_categories=K)
    m.initialize(tf.zeros((1,) + hw, tf.int32))
    rng = np.random.RandomState(seed)
    m.conv_out2.bias.assign(rng.normal(0, 2.0, m.conv_out2.bias.shape).astype(np.float32))
    m.conv_out2.kernel.assign(m.conv_out2.kernel * 4.0)
    return m


def test_codes_shapes_and_one_group():
    m = make_code_model(K=5)
    codes = np.random.RandomState(0).randint(0, 5, (2, 4, 4)).astype(np.int32)
    out = m(codes)
    assert out.shape == (2, 4, 4, 5) and out.dtype == tf.float32
    assert m.num_channels == 1 and m.num_categories == 5
    assert m.conv_in.kernel.shape == (7, 7, 5, 12)                # K one-hot inputs
    # Mask A on codes: one group, so the centre tap is closed for every input and output.
    assert not m.conv_in.kernel_mask[3, 3].any() and m.conv_in.kernel_mask[3, 2].all()
    assert m.subpixel_log_prob(codes, out).shape == (2, 4, 4)
    assert m.nll_per_image(codes, out).shape == (2,)
    with pytest.raises(ValueError):
        m(tf.zeros((1, 4, 4, 1)))                                   # images, not codes
    with pytest.raises(ValueError):
        PixelCNN(num_categories=4, num_channels=3)
    with pytest.raises(ValueError):
        PixelCNN(num_categories=1)


@pytest.mark.parametrize("residual", [True, False])
def test_causality_codes_by_perturbation(residual):
    """Changing the code at (i, j) leaves the logits at (i, j) and every position before it
    unchanged, and changes some position after it."""
    K, H, W = 4, 4, 5
    m = make_code_model(K=K, residual=residual, hw=(H, W))
    rng = np.random.RandomState(1)
    base = rng.randint(0, K, (3, H, W)).astype(np.int32)
    out = m(base).numpy()
    order = np.arange(H * W).reshape(H, W)
    for i in range(H):
        for j in range(W):
            x = base.copy()
            x[:, i, j] = (x[:, i, j] + 1 + rng.randint(0, K - 1, 3)) % K   # another code
            diff = np.abs(m(x).numpy() - out).max(axis=-1)           # (3, H, W)
            before = order <= order[i, j]
            assert diff[:, before].max() == 0.0, (i, j)
            if order[i, j] < H * W - 1:
                # The nearest later positions always see (i, j): right and below.
                assert diff[:, ~before].max() > 0.0, (i, j)
                if j + 1 < W:
                    assert diff[:, i, j + 1].max() > 0.0, (i, j)
                if i + 1 < H:
                    assert diff[:, i + 1, j].max() > 0.0, (i, j)


def test_codes_joint_sums_to_one():
    """Over all 3^4 code maps of a 2x2 map with K = 3, exp(-NLL) sums to 1."""
    K = 3
    m = make_code_model(K=K, hw=(2, 2))
    maps = np.array(np.meshgrid(*[np.arange(K)] * 4, indexing="ij")).reshape(4, -1).T
    maps = maps.reshape(-1, 2, 2).astype(np.int32)                      # (81, 2, 2)
    nll = m.nll_per_image(maps, m(maps)).numpy().astype(np.float64)
    assert len({tuple(r) for r in maps.reshape(81, 4)}) == 81          # every map once
    assert nll.std() > 0.5                                               # far from uniform
    np.testing.assert_allclose(np.exp(-nll).sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(m.objective(maps, m(maps)).numpy(), nll.sum(), rtol=1e-5)


def test_codes_training_lowers_the_loss():
    keras.utils.set_random_seed(0)
    K = 4
    m = PixelCNN(num_layers=1, num_filters=12, num_categories=K)
    # Structured codes: each row repeats one code, so all but the first column is predictable.
    rows = np.random.RandomState(0).randint(0, K, (8, 4, 1))
    x = tf.constant(np.repeat(rows, 4, axis=2).astype(np.int32))
    before, after = _fit(m, x, steps=40)
    assert math.isfinite(after) and after < 0.5 * before, (before, after)
    np.testing.assert_allclose(bits_per_dim(before, 8, (4, 4)), math.log2(K), rtol=0.2)


def test_codes_sampling_matches_a_naive_loop_and_is_seeded():
    K, H, W = 4, 2, 3
    m = make_code_model(K=K, hw=(H, W))
    seed = tf.constant([5, 0], tf.int64)
    x = np.zeros((6, H, W), np.int32)
    for t in range(H * W):
        logits = m(x)[:, t // W, t % W]
        s = tf.random.experimental.stateless_fold_in(seed, tf.constant(t, tf.int64))
        x[:, t // W, t % W] = tf.random.stateless_categorical(logits, 1, s)[:, 0].numpy()
    got = sample(m, 6, (H, W), seed=5).numpy()
    assert got.shape == (6, H, W) and got.dtype == np.int32
    np.testing.assert_array_equal(got, x)
    assert not np.array_equal(got, sample(m, 6, (H, W), seed=6).numpy())
    assert got.min() >= 0 and got.max() < K
    with pytest.raises(ValueError):
        sample(m, 1, (H, W, 1))


def test_codes_sampling_is_exact():
    """1x2 maps: the pair's frequencies match the model's joint (chi-square)."""
    K = 3
    m = make_code_model(K=K, hw=(1, 2))
    # Steepen the output layer so that the second code leans on the first (as in
    # test_sampling_is_exact; the first code's logits are the output biases alone).
    m.conv_out2.kernel.assign(m.conv_out2.kernel * 300.0)
    maps = np.array([[[a, b]] for a in range(K) for b in range(K)], np.int32)  # (9, 1, 2)
    joint = np.exp(-m.nll_per_image(maps, m(maps)).numpy().astype(np.float64))
    joint /= joint.sum()
    drawn = sample(m, 20000, (1, 2), seed=3).numpy()[:, 0]
    counts = np.bincount(drawn[:, 0] * K + drawn[:, 1], minlength=K * K)
    ok, stat, crit = chi_square_ok(counts, joint)
    assert ok, (stat, crit)
    # Power: the second code drawn without conditioning on the first would fail.
    indep = np.outer(joint.reshape(K, K).sum(1), joint.reshape(K, K).sum(0)).ravel()
    assert not chi_square_ok(counts, indep)[0]
