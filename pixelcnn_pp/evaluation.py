"""Test bits/dim of a trained model: ours (a save_dir) or the original's TF1 checkpoint."""

import weakref

import numpy as np
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.data import make_loader
from pixelcnn_pp.errors import InvalidInputError
from pixelcnn_pp.likelihood import bits_per_dim, model_inputs
from pixelcnn_pp.training.steps import (effective_weights, given_weights, spatial_kwarg,
                                        split_batch)

__all__ = ["evaluate_checkpoint", "test_bits_per_dim"]


# model -> its traced evaluation step (reused by every call: traced once per input signature)
_STEPS = weakref.WeakKeyDictionary()


def _eval_step(model):
    """(weights(), step(w, x, y, s=None)): the model's effective weights, computed once for
    a pass, and the objective summed over a batch with them, ``training=False``."""
    if model not in _STEPS:
        k = model.num_classes

        @tf.function
        def step(w, x, y, s=None):
            x = model_inputs(x)
            h = tf.one_hot(y, k) if k else None
            with given_weights(model, w):
                return model.objective(x, model(x, h=h, training=False, **spatial_kwarg(s)))

        _STEPS[model] = (tf.function(lambda: effective_weights(model)), step)
    return _STEPS[model]


def test_bits_per_dim(model, config, loader, max_batches=None):
    """(mean bits/dim, images) of the loader's images under the model (as loaded: no swapping
    of weights here); bits per code for a prior over codes. The model's traced step is kept
    for the next call."""
    weights, step = _eval_step(model)
    w = weights()         # once: the weights do not change during the pass

    total, n = 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y, s = split_batch(batch, loader.return_labels,
                              getattr(loader, "return_spatial", False))
        y = np.zeros(len(x), np.int32) if y is None else y
        args = (w, tf.constant(x), tf.constant(y, tf.int32))
        total += float(step(*args) if s is None else step(*args, tf.constant(s)))
        n += len(x)
    if n == 0:
        raise InvalidInputError("the test split gave no full batch: lower --batch_size")
    return bits_per_dim(total, n, config.image_shape), n


def evaluate_checkpoint(save_dir=None, tf1_checkpoint=None, tf1_model=None, data_set=None,
                        data_dir=None, batch_size=16, use_averages=True, max_batches=None,
                        fast_ops=False):
    """{"test_bpd", "images", "data_set"} for a save_dir of ours, or a TF1 checkpoint trained
    with the model flags ``tf1_model`` (ModelConfig arguments) on the data set's image shape;
    {"test_bits_per_code", "code_maps", "data_set"} for a prior over codes. The data set
    defaults to the save_dir's (``checkpoint.data_source``)."""
    data_set, data_dir = ckpt_lib.data_source(save_dir, data_set, data_dir)
    model_config, loader = None, None
    if tf1_checkpoint is not None:
        tf1_model = tf1_model or {}
        loader = make_loader(data_set, data_dir, "test", batch_size,
                             return_labels=bool(tf1_model.get("num_classes")))
        model_config = ModelConfig.for_tf1(loader.get_observation_size(), **tf1_model)
    # The newest intact checkpoint (damaged newer ones renamed and reported).
    model, config = ckpt_lib.load_for_inference(save_dir, tf1_checkpoint, model_config,
                                                use_averages=use_averages, fast_ops=fast_ops)
    if loader is None:
        loader = make_loader(data_set, data_dir, "test", batch_size,
                             return_labels=bool(config.num_classes),
                             return_spatial=bool(config.spatial_channels))
    if tuple(loader.get_observation_size()) != config.image_shape:
        raise InvalidInputError(f"the model was trained on {config.image_shape} images but "
                                f"{data_set!r} has {loader.get_observation_size()}")
    bpd, n = test_bits_per_dim(model, config, loader, max_batches=max_batches)
    if config.num_categories:
        return {"test_bits_per_code": bpd, "code_maps": n, "data_set": data_set}
    return {"test_bpd": bpd, "images": n, "data_set": data_set}
