"""Autoregression checked by gradients (as TFP's PixelCNN tests): the output at (i, j) has zero
gradient with respect to every input pixel at or after (i, j) in raster order and to the other
images of the batch, and a non-zero one with respect to its left and upper neighbours."""

import numpy as np
import pytest
import tensorflow as tf

import pixelcnn_pp

from helpers import one_hot, random_images, tiny_model

H, W = 8, 12
POSITIONS = [(0, 0), (0, 5), (1, 0), (3, 4), (4, 11), (7, 7)]


def output_gradients(model, x, h, i, j, b=1):
    """d(random projection of l[b, i, j]) / dx -> (B, H, W, C)."""
    x = tf.convert_to_tensor(x)
    proj = tf.constant(np.random.RandomState(i * W + j).normal(
        size=model.out_nin.num_filters).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        l = model(x, h=h, training=False)
        y = tf.reduce_sum(l[b, i, j] * proj)
    return tape.gradient(y, x).numpy()


def assert_causal(model, x, h):
    for i, j in POSITIONS:
        g = np.abs(output_gradients(model, x, h, i, j)).sum(axis=-1)  # (B, H, W)
        flat = g[1].reshape(-1)
        k = i * W + j
        assert np.all(flat[k:] == 0), f"({i},{j}) sees itself or a later pixel"
        assert np.all(g[0] == 0) and np.all(g[2] == 0), f"({i},{j}) sees another image"
        if j > 0:
            assert g[1, i, j - 1] > 0, f"({i},{j}) does not see its left neighbour"
        if i > 0:
            assert g[1, i - 1, j] > 0, f"({i},{j}) does not see its upper neighbour"


def one_step(model, x, h):
    opt = pixelcnn_pp.optim.Adam(1e-2)
    with tf.GradientTape() as tape:
        loss = pixelcnn_pp.discretized_mix_logistic_loss(x, model(x, h=h, training=True))
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables))


@pytest.mark.parametrize("nonlinearity", ["concat_elu", "elu", "relu"])
def test_causal_at_init_and_after_a_step(nonlinearity):
    x = random_images((3, H, W, 3), seed=1)
    model = tiny_model(nonlinearity, dropout_p=0.5)
    model.initialize(x)
    assert_causal(model, x, None)
    one_step(model, x, None)
    assert_causal(model, x, None)


def test_conditional_model_is_causal_and_uses_its_label():
    x = random_images((3, H, W, 3), seed=2)
    h = one_hot([0, 1, 2], 3)
    model = tiny_model(num_classes=3)
    model.initialize(x, h=h)
    assert_causal(model, x, h)
    one_step(model, x, h)
    assert_causal(model, x, h)
    # The first pixel sees no image at all, only the label: changing it changes the output.
    l1 = model(x, h=h).numpy()
    l2 = model(x, h=one_hot([1, 2, 0], 3)).numpy()
    assert np.abs(l1[:, 0, 0] - l2[:, 0, 0]).max() > 1e-4


def test_the_whole_upper_left_context_is_seen():
    """The receptive field covers (nearly) all rows above and the nearby pixels to the left."""
    x = random_images((3, H, W, 3), seed=3)
    model = tiny_model()
    model.initialize(x)
    g = np.abs(output_gradients(model, x, None, 7, 7)).sum(axis=-1)[1]
    rows_above = g[:7]
    assert np.count_nonzero(rows_above) >= 0.9 * rows_above.size
    assert np.all(g[7, 2:7] > 0)  # the tiny model reaches 5 pixels to the left in its row
