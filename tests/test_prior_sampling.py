"""Sampling from PixelCNN++ as a prior: codes (the K-way head), a global condition of any
floats, a spatial condition map, any H, W, and a temperature.

As in test_sampling.py, every equality test runs both methods with one seed on a tiny
data-initialised model: the fast sampler computes the same functions of the same drawn codes
in another order, so the codes are equal (and images equal to float round-off). Odd sizes
exercise the padding masks, which the fast sampler applies by column.
"""

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_pp.errors import InvalidInputError, UsageError
from pixelcnn_pp.model import PixelCNNPP
from pixelcnn_pp.sampling import complete, sample

K, H_DIM, S_DIM = 6, 3, 2
_MODELS = {}


def prior(nr_resnet=1):
    """A tiny prior over K codes with a global condition (3 floats) and a spatial map (2
    channels), data-initialised on random 8x8 codes; built once per nr_resnet."""
    key = ("prior", nr_resnet)
    if key not in _MODELS:
        model = PixelCNNPP(nr_resnet=nr_resnet, nr_filters=8, dropout_p=0.0, seed=0,
                           num_categories=K, h_dim=H_DIM, spatial_channels=S_DIM)
        codes = tf.random.stateless_uniform((4, 8, 8), (1, 2), 0, K, dtype=tf.int32)
        model.initialize(codes, h=floats((4, H_DIM), 1), spatial=floats((4, 4, 4, S_DIM), 2),
                         training=False)
        _MODELS[key] = model
    return _MODELS[key]


def image_model():
    """A tiny image model with a global condition of 2 floats and a 1-channel spatial map."""
    if "images" not in _MODELS:
        model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout_p=0.0,
                           seed=0, h_dim=2, spatial_channels=1)
        x = tf.random.stateless_uniform((4, 8, 8, 3), (1, 2), -1.0, 1.0)
        model.initialize(x, h=floats((4, 2), 1), spatial=floats((4, 2, 2, 1), 2),
                         training=False)
        _MODELS["images"] = model
    return _MODELS["images"]


def floats(shape, seed):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def assert_valid_codes(codes, shape):
    assert codes.dtype == np.int32 and codes.shape == shape
    assert codes.min() >= 0 and codes.max() < K
    assert np.unique(codes).size > 1                  # not a degenerate sampler


# nr_resnet, (H, W), batch, the spatial map's (Hs, Ws)
CODE_CONFIGS = [
    (1, (8, 8), 1, (4, 4)),
    (1, (7, 7), 3, (7, 1)),
    (2, (5, 6), 2, (5, 3)),
    (2, (7, 7), 1, (1, 7)),
]


@pytest.mark.parametrize("nr_resnet,shape,batch_size,spatial_hw", CODE_CONFIGS)
def test_fast_equals_naive_for_codes(nr_resnet, shape, batch_size, spatial_hw):
    model = prior(nr_resnet)
    h = floats((batch_size, H_DIM), 3)
    spatial = floats((batch_size,) + spatial_hw + (S_DIM,), 4)
    naive = sample(model, batch_size, shape, h=h, spatial=spatial, seed=7, method="naive")
    fast = sample(model, batch_size, shape, h=h, spatial=spatial, seed=7, method="fast")
    assert_valid_codes(fast, (batch_size,) + shape)
    np.testing.assert_array_equal(fast, naive)


def test_codes_follow_h_and_the_spatial_map():
    model, shape = prior(), (7, 7)
    h, spatial = floats((2, H_DIM), 3), floats((2, 7, 7, S_DIM), 4)
    base = sample(model, 2, shape, h=h, spatial=spatial, seed=5)
    assert not np.array_equal(base, sample(model, 2, shape, h=-h, spatial=spatial, seed=5))
    assert not np.array_equal(base, sample(model, 2, shape, h=h, spatial=-spatial, seed=5))


def test_images_fast_equals_naive_at_an_odd_size():
    model = image_model()
    h, spatial = floats((2, 2), 3), floats((2, 7, 1, 1), 4)
    for temperature in (1.0, 0.7):
        naive = sample(model, 2, (7, 5, 3), h=h, spatial=spatial, seed=3, method="naive",
                       temperature=temperature)
        fast = sample(model, 2, (7, 5, 3), h=h, spatial=spatial, seed=3, method="fast",
                      temperature=temperature)
        assert fast.dtype == np.float32 and fast.shape == (2, 7, 5, 3)
        assert np.abs(fast).max() <= 1.0
        np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-4)


def test_temperature_one_is_the_default_and_a_lower_one_concentrates():
    model, n, shape = prior(), 8, (8, 8)
    h, spatial = floats((n, H_DIM), 3), floats((n, 4, 4, S_DIM), 4)
    default = sample(model, n, shape, h=h, spatial=spatial, seed=2)
    np.testing.assert_array_equal(
        sample(model, n, shape, h=h, spatial=spatial, seed=2, temperature=1.0), default)

    def mean_log_prob(codes):    # under the model itself (T = 1), per code, nats
        logits = model(codes, h=h, spatial=spatial)
        return float(tf.reduce_mean(model.subpixel_log_prob(codes, logits)))

    cold = sample(model, n, shape, h=h, spatial=spatial, seed=2, temperature=0.3)
    hot = sample(model, n, shape, h=h, spatial=spatial, seed=2, temperature=3.0)
    assert mean_log_prob(cold) > mean_log_prob(default) + 0.1 > mean_log_prob(hot) + 0.2
    # Both methods apply it alike.
    naive = sample(model, 2, (5, 6), h=h[:2], spatial=spatial[:2, :1, :1], seed=2,
                   temperature=0.5, method="naive")
    fast = sample(model, 2, (5, 6), h=h[:2], spatial=spatial[:2, :1, :1], seed=2,
                  temperature=0.5, method="fast")
    np.testing.assert_array_equal(fast, naive)


def test_image_temperature_one_is_the_default():
    model = image_model()
    h, spatial = floats((1, 2), 3), floats((1, 2, 2, 1), 4)
    np.testing.assert_array_equal(
        sample(model, 1, (4, 4, 3), h=h, spatial=spatial, seed=1, temperature=1.0),
        sample(model, 1, (4, 4, 3), h=h, spatial=spatial, seed=1))


def test_completion_of_codes_keeps_the_given_rows_and_fast_equals_naive():
    model, (H, W) = prior(), (7, 6)
    h, spatial = floats((2, H_DIM), 3), floats((2, 7, 3, S_DIM), 4)
    codes = np.random.RandomState(0).randint(0, K, (2, H, W))
    for num_given in (3 * W, 2 * W + 4):             # whole rows, a partial row
        naive = complete(model, codes, num_given, h=h, spatial=spatial, seed=9,
                         method="naive")
        fast = complete(model, codes, num_given, h=h, spatial=spatial, seed=9, method="fast")
        assert_valid_codes(fast, codes.shape)
        np.testing.assert_array_equal(fast.reshape(2, -1)[:, :num_given],
                                      codes.reshape(2, -1)[:, :num_given])
        np.testing.assert_array_equal(fast, naive)
    np.testing.assert_array_equal(complete(model, codes, 0, h=h, spatial=spatial, seed=9),
                                  sample(model, 2, (H, W), h=h, spatial=spatial, seed=9))


def _one_line_error(cls, match, call):
    with pytest.raises(cls, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_argument_errors():
    model = prior()
    h, spatial = floats((2, H_DIM), 3), floats((2, 4, 4, S_DIM), 4)
    _one_line_error(UsageError, "spatial map", lambda: sample(model, 2, (8, 8), h=h))
    _one_line_error(InvalidInputError, r"spatial must have shape \(2, Hs, Ws, 2\)",
                    lambda: sample(model, 2, (8, 8), h=h, spatial=floats((2, 3, 4, 2), 0)))
    _one_line_error(InvalidInputError, "spatial must have shape",
                    lambda: sample(model, 2, (8, 8), h=h, spatial=spatial[..., :1]))
    plain = PixelCNNPP(nr_resnet=1, nr_filters=4, nr_logistic_mix=2)
    plain(tf.zeros((1, 4, 4, 3)))
    _one_line_error(UsageError, "no spatial map",
                    lambda: sample(plain, 2, (8, 8, 3), spatial=spatial))
    for bad in (0, -1.0, float("nan"), float("inf"), "1"):
        _one_line_error(UsageError, "temperature must be a finite number > 0",
                        lambda: sample(model, 2, (8, 8), h=h, spatial=spatial,
                                       temperature=bad))
    _one_line_error(UsageError, r"h_dim=3\): pass h", lambda: sample(model, 2, (8, 8),
                                                                     spatial=spatial))
    _one_line_error(InvalidInputError, r"\(batch_size, h_dim\) = \(2, 3\)",
                    lambda: sample(model, 2, (8, 8), h=h[:, :2], spatial=spatial))
    _one_line_error(InvalidInputError, r"\(H, W\) \(a prior over codes\)",
                    lambda: sample(model, 2, (8, 8, 1), h=h, spatial=spatial))
    codes = np.zeros((2, 8, 8), np.int32)
    _one_line_error(InvalidInputError, "int codes",
                    lambda: complete(model, codes.astype(np.float32), 8, h=h, spatial=spatial))
    codes[0, 0, 1] = K
    _one_line_error(InvalidInputError, r"given codes must lie in \[0, 6\)",
                    lambda: complete(model, codes, 8, h=h, spatial=spatial))
