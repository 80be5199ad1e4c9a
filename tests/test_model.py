"""Model structure, data-dependent init statistics, input validation, conversion errors."""

import numpy as np
import pytest
import tensorflow as tf

import pixelcnn_pp
from pixelcnn_pp import layers as L
from pixelcnn_pp.convert import (assign_tf1_variables, export_tf1_variables, load_tf1_checkpoint,
                                  tf1_variables)
from pixelcnn_pp.interface import AutoregressiveModel

from helpers import golden_model, one_hot, random_images, tiny_model


def test_full_model_has_the_papers_parameter_count():
    model = pixelcnn_pp.PixelCNNPP()  # 5 / 160 / 10
    model(tf.zeros((1, 32, 32, 3)))
    n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert n == 53_659_080


@pytest.mark.parametrize("nonlinearity", ["concat_elu", "elu"])
def test_after_initialize_each_layer_is_normalised_on_the_init_batch(nonlinearity):
    x = random_images((4, 8, 12, 3), seed=0)
    model = tiny_model(nonlinearity, num_classes=2)
    h = one_hot([0, 1, 1, 0], 2)
    model.initialize(x, h=h)
    captured = {}
    layers = model.weight_norm_layers()
    for i, layer in enumerate(layers):  # record each layer's pre-activation (pre-crop) output
        def wrap(orig, name=f"{i}: {layer.name}", layer=layer):
            def _apply(v):
                y = orig(v)
                captured[name] = (y.numpy(), layer.init_scale)
                return y
            return _apply
        layer._apply = wrap(layer._apply)
    model(x, h=h)
    assert len(captured) == len(layers)
    scales = {s for _, s in captured.values()}
    assert scales == {1.0, 0.1}
    for name, (y, scale) in captured.items():
        y = y.reshape(-1, y.shape[-1]).astype(np.float64)
        np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5 * max(scale, 1e-3) * 10, err_msg=name)
        np.testing.assert_allclose(y.var(0), scale ** 2, rtol=1e-3, err_msg=name)


def test_second_conv_of_every_gated_resnet_uses_init_scale_0_1():
    model = tiny_model()
    for blk in model.blocks():
        assert blk.conv1.init_scale == 1.0 and blk.conv2.init_scale == 0.1


def test_non_square_images_and_output_shape():
    model = tiny_model()
    x = random_images((2, 8, 12, 3))
    model.initialize(x)
    assert model(x).shape == (2, 8, 12, 20)


@pytest.mark.parametrize("shape,match", [
    ((2, 0, 12, 3), ">= 1"),
    ((2, 8, 0, 3), ">= 1"),
    ((2, 8, 8, 4), "3-channel"),
    ((2, 8, 8, 1), "3-channel"),
    ((8, 8, 3), r"\(B, H, W, C\)"),
])
def test_bad_image_shapes_raise_one_clear_value_error(shape, match):
    model = tiny_model()
    with pytest.raises(ValueError, match=match):
        model(tf.zeros(shape))


def test_bad_labels_raise_value_errors():
    x = tf.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="class-conditional"):
        tiny_model(num_classes=3)(x)
    with pytest.raises(ValueError, match="unconditional"):
        tiny_model()(x, h=one_hot([0, 1], 3))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        tiny_model(num_classes=3)(x, h=one_hot([0, 1], 4))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="resnet_nonlinearity"):
        pixelcnn_pp.PixelCNNPP(resnet_nonlinearity="tanh")
    with pytest.raises(ValueError, match="num_channels"):
        pixelcnn_pp.PixelCNNPP(num_channels=2)


def test_conditional_variables_are_named_like_the_original():
    model = tiny_model(num_classes=10)
    model(tf.zeros((1, 8, 8, 3)), h=tf.zeros((1, 10)))
    names = tf1_variables(model)
    hw = sorted(n for n in names if n.endswith("/hw"))
    n_blocks = len(model.blocks())
    assert hw == sorted(f"model/conditional_weights_{i}/hw" for i in range(n_blocks))
    assert names["model/conditional_weights_0/hw"].shape == (10, 16)


def test_export_assign_round_trip_and_mismatch_errors():
    a, b = golden_model(), golden_model()
    arrays = export_tf1_variables(a)
    assign_tf1_variables(b, arrays)
    x = random_images((2, 16, 16, 3))
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    bad = dict(arrays)
    del bad["model/conv2d_3/V"]
    bad["model/conv2d_99/V"] = np.zeros(3)
    bad["model/dense_0/g"] = np.zeros(5)
    with pytest.raises(ValueError) as e:
        assign_tf1_variables(b, bad)
    msg = str(e.value)
    assert "1 missing" in msg and "model/conv2d_3/V" in msg
    assert "1 unexpected" in msg and "model/conv2d_99/V" in msg
    assert "1 mis-shaped" in msg and "model/dense_0/g" in msg
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())  # nothing was assigned


def test_an_unbuilt_model_says_to_call_it_first():
    with pytest.raises(ValueError, match="call it once"):
        export_tf1_variables(tiny_model())


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    from helpers import GOLDEN_CKPT
    model = pixelcnn_pp.PixelCNNPP(nr_resnet=1, nr_filters=16, nr_logistic_mix=4)
    model(tf.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="99 unexpected") as e:
        load_tf1_checkpoint(model, GOLDEN_CKPT)
    assert "35 mis-shaped" in str(e.value) and "and 87 more" in str(e.value)
    with pytest.raises(FileNotFoundError, match="no TF1 checkpoint"):
        load_tf1_checkpoint(model, str(tmp_path / "nothing.ckpt"))


def test_shifts():
    x = tf.reshape(tf.range(1, 7, dtype=tf.float32), (1, 2, 3, 1))
    down, right = [[0, 0, 0], [1, 2, 3]], [[0, 1, 2], [0, 4, 5]]
    np.testing.assert_array_equal(L.down_shift(x).numpy()[0, :, :, 0], down)
    np.testing.assert_array_equal(L.right_shift(x).numpy()[0, :, :, 0], right)
    # The same where H and W are known only when the function runs.
    spec = tf.TensorSpec((None, None, None, 1), tf.float32)
    for shift, want in ((L.down_shift, down), (L.right_shift, right)):
        traced = tf.function(shift, input_signature=[spec])
        np.testing.assert_array_equal(traced(x).numpy()[0, :, :, 0], want)


def test_checkpoints_name_the_weights_by_the_layout(tmp_path):
    """The keys our checkpoints have always had (a change here strands every saved run)."""
    model = tiny_model(num_classes=2)
    model(tf.zeros((1, 8, 8, 3)), h=tf.zeros((1, 2)))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    keys = {k.split("/.ATTRIBUTES")[0] for k, _ in tf.train.list_variables(path)}
    weights = {k for k in keys if k.startswith("model/")} - {"model/rng/_state_var"}
    assert len(weights) == len(model.weights)
    for k in ("model/u_init/V", "model/ul_init_down/g", "model/ul_init_right/b",
              "model/up_u_0/conv1/V", "model/up_ul_2/nin_a/g", "model/up_ul_2/conv2/b",
              "model/downsample_u_1/V", "model/downsample_ul_0/g", "model/upsample_u_0/b",
              "model/upsample_ul_1/V", "model/down_u_0/nin_a/V", "model/down_ul_4/conv1/g",
              "model/down_u_4/hw", "model/out_nin/V"):
        assert k in weights, k
    assert "model/down_u_5/conv1/V" not in weights      # 1 + 2 + 2 down blocks per stream


def test_the_weights_are_in_forward_order():
    """The optimiser's slots and the Polyak averages are checkpointed by their index in
    ``trainable_variables``: this order is what every saved run holds."""
    model = tiny_model(num_classes=2, nr_resnet=2)
    model(tf.zeros((1, 8, 8, 3)), h=tf.zeros((1, 2)))
    hw_before = {id(blk.conv1): blk.hw for blk in model.blocks()}  # a block's own weight first
    want = []
    for layer in model.weight_norm_layers():
        want += [hw_before[id(layer)]] if id(layer) in hw_before else []
        want += [layer.V, layer.g, layer.b]
    assert [id(v) for v in model.trainable_variables] == [id(v) for v in want]
    assert [id(v) for v in model.weights] == [id(v) for v in want]


def test_both_models_declare_the_shared_interface():
    from pixelcnn_pp.baseline import PixelCNN
    for model in (tiny_model(), tiny_model(energy_distance=True), PixelCNN(1, 8)):
        assert isinstance(model, AutoregressiveModel), type(model).__name__
    assert not isinstance(L.GatedResnet(4, L.DownShiftedConv2D), AutoregressiveModel)


def test_a_checkpoint_of_the_model_alone_restores_every_weight(tmp_path):
    x = random_images((1, 8, 8, 3))
    a, b = tiny_model(), tiny_model(seed=5)
    a.initialize(x)
    b(x)
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=b).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_the_first_call_builds_the_model_without_a_symbolic_trace(monkeypatch):
    # PixelCNNPP.build leaves the weights to its layers' first calls: Keras's fallback, which
    # traces a whole symbolic call first, would cost as much as the call at full size.
    import keras

    traced = []
    real = keras.src.backend.compute_output_spec

    def record(*a, **k):
        traced.append(a)
        return real(*a, **k)

    monkeypatch.setattr(keras.src.backend, "compute_output_spec", record)
    model = tiny_model()
    model(random_images((1, 8, 8, 3)))
    assert model.built and model.built_weights()
    assert not traced


@pytest.mark.parametrize("kw", [{}, {"num_classes": 3}, {"spatial_channels": 2}])
def test_given_effective_weights_give_the_same_output_bitwise(kw):
    """An evaluation pass computes each layer's normalised weights once (``given_weights``):
    the outputs are those of the model normalising them itself, bit for bit."""
    model = tiny_model(**kw)
    x = random_images((2, 8, 8, 3), seed=4)
    extra = {}
    if kw.get("num_classes"):
        extra["h"] = one_hot([0, 2], 3)
    if kw.get("spatial_channels"):
        extra["spatial"] = tf.random.stateless_normal((2, 4, 4, 2), (5, 6))
    model.initialize(x, training=False, **extra)
    want = model(x, **extra).numpy()
    w = model.effective_weights()
    assert len(w) == len(model.weight_norm_layers())
    with model.given_weights(w):
        np.testing.assert_array_equal(model(x, **extra).numpy(), want)
    with model.given_weights([t * 2.0 for t in w]):             # they are what is used
        assert not np.array_equal(model(x, **extra).numpy(), want)
    assert all(layer.given is None for layer in model.weight_norm_layers())
    np.testing.assert_array_equal(model(x, **extra).numpy(), want)
    with pytest.raises(ValueError, match="weights for"):
        with model.given_weights(w[:-1]):
            pass
