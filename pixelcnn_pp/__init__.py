"""PixelCNN++ (Salimans, Karpathy, Chen, Kingma, ICLR 2017) in TensorFlow 2 / Keras 3."""

import os as _os

if _os.environ.get("PIXELCNN_QUIET_TF") == "1":   # set by the entry points: see cli.py
    from pixelcnn_pp.cli import quiet_tensorflow_import as _quiet
    _quiet()

from pixelcnn_pp import optim  # noqa: E402
from pixelcnn_pp.likelihood import (bits_per_dim, discretized_mix_logistic_log_prob,
                                    discretized_mix_logistic_loss, energy_distance_loss,
                                    nll_per_image, sample_from_discretized_mix_logistic,
                                    subpixel_log_prob)
from pixelcnn_pp.model import PixelCNNPP

__version__ = "0.1.0"

__all__ = [
    "PixelCNNPP", "optim", "discretized_mix_logistic_loss", "discretized_mix_logistic_log_prob",
    "nll_per_image", "subpixel_log_prob", "bits_per_dim", "sample_from_discretized_mix_logistic",
    "energy_distance_loss",
]
