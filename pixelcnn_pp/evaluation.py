"""Test bits/dim of a trained model: ours (a save_dir) or the original's TF1 checkpoint."""

import numpy as np
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.data import make_loader
from pixelcnn_pp.errors import InvalidInputError
from pixelcnn_pp.likelihood import bits_per_dim, scale_images

__all__ = ["evaluate_checkpoint", "test_bits_per_dim"]


def test_bits_per_dim(model, config, loader, max_batches=None):
    """(mean bits/dim, images) of the loader's images under the model (as loaded: no swapping
    of weights here)."""
    k = config.num_classes

    @tf.function
    def step(x, y):
        x = scale_images(x)
        h = tf.one_hot(y, k) if k else None
        return model.objective(x, model(x, h=h, training=False))

    total, n = 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = batch if loader.return_labels else (batch, np.zeros(len(batch), np.int32))
        total += float(step(tf.constant(x), tf.constant(y, tf.int32)))
        n += len(x)
    if n == 0:
        raise InvalidInputError("the test split gave no full batch: lower --batch_size")
    return bits_per_dim(total, n, config.image_shape), n


def evaluate_checkpoint(save_dir=None, tf1_checkpoint=None, tf1_model=None, data_set=None,
                        data_dir=None, batch_size=16, use_averages=True, max_batches=None,
                        fast_ops=False):
    """{"test_bpd", "images", "data_set"} for a save_dir of ours, or a TF1 checkpoint trained
    with the model flags ``tf1_model`` (ModelConfig arguments) on the data set's image shape.
    The data set defaults to the save_dir's (``checkpoint.data_source``)."""
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
                             return_labels=bool(config.num_classes))
    if tuple(loader.get_observation_size()) != config.image_shape:
        raise InvalidInputError(f"the model was trained on {config.image_shape} images but "
                                f"{data_set!r} has {loader.get_observation_size()}")
    bpd, n = test_bits_per_dim(model, config, loader, max_batches=max_batches)
    return {"test_bpd": bpd, "images": n, "data_set": data_set}
