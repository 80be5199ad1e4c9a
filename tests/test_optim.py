"""The original's Adam against its formula, and Polyak averaging."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import pixelcnn_pp
from pixelcnn_pp.optim import PolyakAverage


def reference_adam(p, grads, lrs, b1=0.95, b2=0.9995, eps=1e-8):
    """The original's nn.py: adam_updates, in float64."""
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / np.sqrt(v / (1 - b2 ** t) + eps)
    return p


def test_adam_matches_the_formula_in_float64_for_gradients_from_1e_7_to_1():
    rng = np.random.RandomState(0)
    mags = np.logspace(-7, 0, 36)
    p0 = rng.normal(size=36)
    grads = [mags * rng.choice([-1.0, 1.0], size=36) * rng.uniform(0.5, 1.5, size=36)
             for _ in range(5)]
    lrs = [1e-3 * 0.999995 ** (k + 1) for k in range(5)]
    var = keras.Variable(p0, dtype="float64")
    opt = pixelcnn_pp.optim.Adam(learning_rate=lrs[0])
    opt.build([var])
    for g, lr in zip(grads, lrs):
        opt.learning_rate = lr  # settable per step
        opt.apply_gradients([(tf.constant(g), var)])
    ours = var.numpy()
    ref = reference_adam(p0, grads, lrs)
    # Relative to the distance moved: the update itself is right to 1e-6.
    np.testing.assert_allclose(ours - p0, ref - p0, rtol=1e-6, atol=1e-15)
    # Keras's Adam (epsilon outside the square root) would not be: check the test can tell.
    assert np.max(np.abs((ref - p0) - reference_adam_keras_like(p0, grads, lrs))) > 1e-6


def reference_adam_keras_like(p, grads, lrs, b1=0.95, b2=0.9995, eps=1e-8):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    p0 = p
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p - p0


def test_adam_defaults_are_the_originals():
    opt = pixelcnn_pp.optim.Adam()
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.95, 0.9995, 1e-8)
    assert float(opt.learning_rate) == pytest.approx(1e-3)


@pytest.mark.parametrize("fused", [False, True])
def test_a_step_makes_its_scalars_once_for_all_arrays(fused):
    # 1 - beta^t and the learning rate's cast are the step's, not each array's: one Pow per
    # beta in the traced step whatever the number of arrays, and the formula unchanged.
    shapes = [(3,), (2, 2), (4,), (1, 5)]
    vs = [keras.Variable(np.full(s, 1.0, np.float32)) for s in shapes]
    opt = pixelcnn_pp.optim.Adam(learning_rate=0.1, fused=fused)
    opt.build(vs)

    @tf.function
    def step():
        opt.apply_gradients([(tf.fill(v.shape, 0.5), v) for v in vs])

    ops = step.get_concrete_function().graph.get_operations()
    assert sum(op.type == "Pow" for op in ops) == 2
    step()
    step()
    want = reference_adam(np.ones(1), [np.full(1, 0.5)] * 2, [0.1] * 2)
    for v in vs:
        # (rtol: the original's float32 rounding of 1 - beta2, as in the test below)
        np.testing.assert_allclose(v.numpy(), np.full(v.shape, want[0]), rtol=2e-5)


def test_learning_rate_can_be_assigned_inside_a_tf_function():
    var = keras.Variable(np.ones(3, np.float32))
    opt = pixelcnn_pp.optim.Adam(learning_rate=1.0)
    opt.build([var])

    @tf.function
    def step(lr):
        opt.learning_rate.assign(lr)
        opt.apply_gradients([(tf.ones(3), var)])

    step(tf.constant(0.5))
    # first step: update = lr * g / sqrt(g^2 + eps) ~= lr (times 1 + 2.3e-5 in float32: the
    # original's rounding of 1 - beta2, reproduced on purpose)
    np.testing.assert_allclose(var.numpy(), 1.0 - 0.5 * (1 + 2.3e-5), rtol=1e-6)


def test_polyak_average_update_reset_and_swap():
    v = tf.Variable([1.0, 2.0])
    avg = PolyakAverage([v], decay=0.9, warmup=False)  # constant decay (warm-up: test_polyak)
    np.testing.assert_array_equal(avg.averages[0].numpy(), [1.0, 2.0])  # starts at the values
    v.assign([3.0, 4.0])
    avg.update()
    np.testing.assert_allclose(avg.averages[0].numpy(), [1.2, 2.2], rtol=1e-6)
    with avg.swap():
        np.testing.assert_allclose(v.numpy(), [1.2, 2.2], rtol=1e-6)
    np.testing.assert_array_equal(v.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(avg.averages[0].numpy(), [1.2, 2.2], rtol=1e-6)
    with pytest.raises(RuntimeError):
        with avg.swap():
            raise RuntimeError("evaluation failed")
    np.testing.assert_array_equal(v.numpy(), [3.0, 4.0])  # swapped back even on error
    avg.reset()
    np.testing.assert_array_equal(avg.averages[0].numpy(), [3.0, 4.0])
