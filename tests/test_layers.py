"""The layer primitives: dropout's rule, the weight normalisation's formula, the gate, on
the reference path (fast_ops=False) and with the fast versions (docs/ORIGINAL.md §1). The
fast versions are held to their plain formulas in test_fast_ops.py."""

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import layers as L


@pytest.fixture(params=[False, True], ids=["plain", "fast_ops"])
def fast(request):
    return request.param


def _value_and_grad(f, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    return y, tape.gradient(y, x, output_gradients=upstream)


def test_weight_normalize_is_g_times_the_unit_direction(fast):
    V = tf.random.stateless_normal((2, 3, 6, 5), (5, 6)) * 0.05
    g = tf.random.stateless_normal([5], (7, 8))
    W = L.weight_normalize(V, g, (0, 1, 2), [1, 1, 1, 5], fast).numpy().astype(np.float64)
    V64 = V.numpy().astype(np.float64)
    want = g.numpy()[None, None, None, :] * V64 / np.sqrt((V64 ** 2).sum((0, 1, 2)))
    np.testing.assert_allclose(W, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rate", [0.5, 0.25, 3 / 65536, 0.3])  # 8-bit, 8-bit, 16-bit, float
def test_dropout_keeps_one_minus_rate_and_scales(rate, fast):
    x = tf.fill((64, 32, 32, 8), 3.0)
    y = L.dropout(x, rate, tf.constant([1, 2]), fast).numpy()
    kept = y != 0
    np.testing.assert_array_equal(np.unique(y[kept]),
                                  [np.float32(3.0) * np.float32(1 / (1 - rate))])
    n = kept.size
    # 5 standard deviations of a binomial mean (n = 524288 draws)
    assert abs(kept.mean() - (1 - rate)) <= 5 * np.sqrt(rate * (1 - rate) / n) + 1e-9
    # and no pattern along any axis: every channel and every row keeps about the same share
    for axis in (0, 1, 2, 3):
        share = kept.mean(axis=tuple(a for a in range(4) if a != axis))
        bound = 6 * np.sqrt(rate * (1 - rate) / (n / len(share))) + 1e-9
        assert np.all(np.abs(share - (1 - rate)) <= bound)


def test_dropout_masks_follow_the_seed_and_gradients_follow_the_mask(fast):
    x = tf.random.stateless_normal((3, 5, 7, 11), (1, 1))   # size not a multiple of 4
    a, b, c = (L.dropout(x, 0.5, tf.constant(s), fast) for s in ([4, 5], [4, 5], [4, 6]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    _, dx = _value_and_grad(lambda v: L.dropout(v, 0.5, tf.constant([4, 5]), fast), x,
                            tf.ones_like(x))
    np.testing.assert_array_equal(dx.numpy(), np.where(a.numpy() != 0, 2.0, 0.0))
    assert L.dropout(x, 0.0, tf.constant([4, 5]), fast) is x
    half = L.dropout(tf.ones((4, 8), tf.bfloat16), 0.5, tf.constant([1, 2]), fast)
    assert half.dtype == tf.bfloat16
    assert set(np.unique(half.numpy().astype(np.float32))) <= {0.0, 2.0}
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        L.dropout(x, 1.0, tf.constant([4, 5]), fast)


def test_gated_resnet_is_x_plus_a_times_sigmoid_b(fast):
    blk = L.GatedResnet(6, L.DownRightShiftedConv2D, has_a=True, fast_ops=fast)
    rng = np.random.RandomState(4)
    x, a, a2 = (tf.constant(rng.randn(2, 4, 4, 6), tf.float32) for _ in range(3))
    for training in (False, True):      # dropout_p 0: training changes nothing else
        y = blk(x, a=[a, a2], training=training).numpy().astype(np.float64)
        c2 = blk.conv2(L.concat_elu(blk.conv1(L.concat_elu(x))
                                    + blk.nin_a(L.concat_elu(tf.concat([a, a2], -1)))))
        c2 = c2.numpy().astype(np.float64)
        want = x.numpy() + c2[..., :6] / (1 + np.exp(-c2[..., 6:]))
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
