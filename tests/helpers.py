"""Small shared pieces of the test-suite: tiny models and the golden data."""

import os

import numpy as np
import tensorflow as tf

import pixelcnn_pp

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "data", "golden")
GOLDEN_NPZ = os.path.join(GOLDEN_DIR, "shared_small.npz")
GOLDEN_CKPT = os.path.join(GOLDEN_DIR, "shared_small_tf1ckpt", "params_cifar.ckpt")
GOLDEN_CONFIG = dict(nr_resnet=2, nr_filters=16, nr_logistic_mix=4)


def golden():
    return np.load(GOLDEN_NPZ)


def golden_group(data, prefix):
    """{"model/conv2d_0/V": array, ...} for one prefix ("ddi/", "step1/", ...) of the golden npz."""
    return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}


def golden_model(**kw):
    """The golden configuration, built on the golden image shape, dropout off."""
    model = pixelcnn_pp.PixelCNNPP(dropout_p=0.0, **{**GOLDEN_CONFIG, **kw})
    model(tf.zeros((1, 16, 16, 3)))
    return model


def random_images(shape, seed=0):
    """float32 images on the 8-bit grid in [-1, 1]."""
    v = np.random.RandomState(seed).randint(0, 256, size=shape)
    return ((v - 127.5) / 127.5).astype(np.float32)


def tiny_model(nonlinearity="concat_elu", num_classes=None, dropout_p=0.0, **kw):
    cfg = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, resnet_nonlinearity=nonlinearity,
               dropout_p=dropout_p, num_classes=num_classes, seed=0)
    cfg.update(kw)
    return pixelcnn_pp.PixelCNNPP(**cfg)


def one_hot(labels, k):
    return tf.one_hot(labels, k, dtype=tf.float32)
