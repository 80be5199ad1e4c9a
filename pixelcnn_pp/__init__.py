"""PixelCNN++ (Salimans, Karpathy, Chen, Kingma, ICLR 2017) in TensorFlow 2 / Keras 3.

    from pixelcnn_pp import PixelCNNPP, ModelConfig, TrainConfig, train
    from pixelcnn_pp import sampling, scoring, likelihood

The names below are imported on first use, so that ``import pixelcnn_pp`` (and the commands'
flag parsing) does not start TensorFlow.
"""

import importlib

__version__ = "0.2.0"

# public name -> the module that defines it
_EXPORTS = {
    "PixelCNNPP": "pixelcnn_pp.model",
    "PixelCNN": "pixelcnn_pp.baseline",
    "ModelConfig": "pixelcnn_pp.config",
    "TrainConfig": "pixelcnn_pp.config",
    "train": "pixelcnn_pp.training",
    "discretized_mix_logistic_loss": "pixelcnn_pp.likelihood",
    "discretized_mix_logistic_log_prob": "pixelcnn_pp.likelihood",
    "nll_per_image": "pixelcnn_pp.likelihood",
    "subpixel_log_prob": "pixelcnn_pp.likelihood",
    "bits_per_dim": "pixelcnn_pp.likelihood",
    "sample_from_discretized_mix_logistic": "pixelcnn_pp.likelihood",
    "energy_distance_loss": "pixelcnn_pp.likelihood",
    "scale_images": "pixelcnn_pp.likelihood",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pixelcnn_pp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
