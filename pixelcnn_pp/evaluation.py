"""Test bits/dim of a trained model: ours (a save_dir) or the original's TF1 checkpoint."""

import numpy as np
import tensorflow as tf

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.data import make_loader
from pixelcnn_pp.likelihood import bits_per_dim, scale_images
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["evaluate_checkpoint", "test_bits_per_dim"]


def test_bits_per_dim(model, config, loader, max_batches=None):
    """Mean bits/dim of the loader's images under the model (as loaded: no swapping here)."""
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


def evaluate_checkpoint(save_dir=None, tf1_checkpoint=None, data_set=None, data_dir=None,
                        batch_size=16, use_averages=True, tf1_model=None, max_batches=None):
    """{"test_bpd", "images", "data_set"} for a save_dir of ours or a TF1 checkpoint."""
    if (save_dir is None) == (tf1_checkpoint is None):
        raise InvalidInputError("give exactly one of --save_dir or --tf1_checkpoint")
    if save_dir is not None:
        # One loader for eval.py and sample.py: the newest intact checkpoint (damaged newer
        # ones renamed and reported).
        model, config = ckpt_lib.load_for_inference(save_dir=save_dir,
                                                    use_averages=use_averages)
        _, training = ckpt_lib.read_config(save_dir)
        data_set = data_set or training.get("data_set", "cifar")
        data_dir = data_dir or training.get("data_dir", "data_files")
    else:
        data_set = data_set or "cifar"
        data_dir = data_dir or "data_files"
        probe = make_loader(data_set, data_dir, "test", batch_size)
        config = ModelConfig(image_shape=tuple(probe.get_observation_size()), dropout_p=0.0,
                             **(tf1_model or {}))
        model, config = ckpt_lib.load_for_inference(tf1_checkpoint=tf1_checkpoint,
                                                    model_config=config,
                                                    use_averages=use_averages)
    loader = make_loader(data_set, data_dir, "test", batch_size,
                         return_labels=bool(config.num_classes))
    if tuple(loader.get_observation_size()) != config.image_shape:
        raise InvalidInputError(f"the model was trained on {config.image_shape} images but "
                         f"{data_set!r} has {loader.get_observation_size()}")
    bpd, n = test_bits_per_dim(model, config, loader, max_batches=max_batches)
    return {"test_bpd": bpd, "images": n, "data_set": data_set}
