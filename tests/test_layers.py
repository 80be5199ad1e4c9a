"""The layer primitives that are written for speed: each is checked against the plain
TensorFlow formulation it replaces (docs/ORIGINAL.md §1)."""

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp import layers as L


def _value_and_grad(f, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    return y, tape.gradient(y, x, output_gradients=upstream)


@pytest.mark.parametrize("axes, v_shape, g_shape", [
    ((0, 1, 2), (2, 3, 6, 5), [1, 1, 1, 5]),     # conv kernels: (fh, fw, Cin, F)
    ((0, 1, 3), (2, 2, 5, 6), [1, 1, 5, 1])])    # transposed conv kernels: (fh, fw, F, Cin)
def test_weight_normalize_value_and_gradients_equal_the_originals_ops(axes, v_shape, g_shape):
    V = (tf.random.stateless_normal(v_shape, (5, 6)) * 0.05).numpy()
    g = tf.random.stateless_normal([5], (7, 8))
    # One direction with norm 0: the original's epsilon branch (gradient of V: g r dW only).
    first_filter = [slice(None)] * 4
    first_filter[({0, 1, 2, 3} - set(axes)).pop()] = 0   # the filter axis, not normalised
    V[tuple(first_filter)] = 0.0
    V = tf.constant(V)
    up = tf.random.stateless_normal(v_shape, (9, 10))

    def both(fn):
        with tf.GradientTape() as tape:
            tape.watch([V, g])
            W = fn(V, g)
        return W, tape.gradient(W, [V, g], output_gradients=up)

    W, (dV, dg) = both(lambda v, s: L.weight_normalize(v, s, axes, g_shape))
    W0, (dV0, dg0) = both(lambda v, s: tf.reshape(s, g_shape) * tf.nn.l2_normalize(v, axes))
    np.testing.assert_array_equal(W.numpy(), W0.numpy())  # the forward is the same ops
    np.testing.assert_allclose(dV.numpy(), dV0.numpy(), rtol=2e-6, atol=2e-6 * np.abs(dV0).max())
    np.testing.assert_allclose(dg.numpy(), dg0.numpy(), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("rate", [0.5, 0.25, 3 / 65536, 0.3])  # 8-bit, 8-bit, 16-bit, float
def test_dropout_keeps_one_minus_rate_and_scales(rate):
    x = tf.fill((64, 32, 32, 8), 3.0)
    y = L.dropout(x, rate, tf.constant([1, 2])).numpy()
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


def test_dropout_masks_follow_the_seed_and_gradients_follow_the_mask():
    x = tf.random.stateless_normal((3, 5, 7, 11), (1, 1))   # size not a multiple of 4
    a, b, c = (L.dropout(x, 0.5, tf.constant(s)) for s in ([4, 5], [4, 5], [4, 6]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    _, dx = _value_and_grad(lambda v: L.dropout(v, 0.5, tf.constant([4, 5])), x, tf.ones_like(x))
    np.testing.assert_array_equal(dx.numpy(), np.where(a.numpy() != 0, 2.0, 0.0))
    assert L.dropout(x, 0.0, tf.constant([4, 5])) is x
    half = L.dropout(tf.ones((4, 8), tf.bfloat16), 0.5, tf.constant([1, 2]))
    assert half.dtype == tf.bfloat16
    assert set(np.unique(half.numpy().astype(np.float32))) <= {0.0, 2.0}
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        L.dropout(x, 1.0, tf.constant([4, 5]))


@pytest.mark.parametrize("dtype, tol", [(tf.float32, 2e-6), (tf.bfloat16, 2e-2)])
def test_fused_gate_equals_the_originals_ops(dtype, tol):
    rng = np.random.RandomState(3)
    x = tf.constant(rng.randn(2, 5, 6, 7), dtype)
    c2 = tf.constant(rng.randn(2, 5, 6, 14) * 4, dtype)
    a, b = c2[..., :7].numpy().astype(np.float64), c2[..., 7:].numpy().astype(np.float64)
    want = x.numpy().astype(np.float64) + a / (1 + np.exp(-b))
    for fn in (L.gate, L.fused_gate):
        y = fn(x, c2)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_allclose(y.numpy().astype(np.float64), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(L.fused_gate(x, c2).numpy().astype(np.float32),
                               L.gate(x, c2).numpy().astype(np.float32), rtol=tol, atol=tol)


def test_gated_resnet_evaluates_with_the_fused_gate_and_trains_with_the_original_ops(
        monkeypatch):
    names = iter(f"model/layer_{i}" for i in range(10))
    blk = L.GatedResnet(6, L.DownRightShiftedConv2D, lambda kind: next(names), has_a=True)
    rng = np.random.RandomState(4)
    x, a = (tf.constant(rng.randn(2, 4, 4, 6), tf.float32) for _ in range(2))
    evaluated = blk(x, a=a, training=False)     # dropout_p 0: training only changes the gate
    trained = blk(x, a=a, training=True)
    c2 = blk.conv2(L.concat_elu(blk.conv1(L.concat_elu(x)) + blk.nin_a(L.concat_elu(a))))
    np.testing.assert_array_equal(trained.numpy(), L.gate(x, c2).numpy())
    np.testing.assert_array_equal(evaluated.numpy(), L.fused_gate(x, c2).numpy())
    np.testing.assert_allclose(evaluated.numpy(), trained.numpy(), rtol=1e-6, atol=1e-6)
    calls = []
    for name in ("gate", "fused_gate"):
        fn = getattr(L, name)
        monkeypatch.setattr(L, name,
                            lambda *args, fn=fn, name=name: calls.append(name) or fn(*args))
    blk(x, a=a, training=False)
    blk(x, a=a, training=True)
    assert calls == ["fused_gate", "gate"]
