"""PixelCNN++ (Salimans, Karpathy, Chen, Kingma, ICLR 2017) in TensorFlow 2 / Keras 3."""

from pixelcnn_pp import optim
from pixelcnn_pp.likelihood import (bits_per_dim, discretized_mix_logistic_log_prob,
                                    discretized_mix_logistic_loss, energy_distance_loss,
                                    nll_per_image, sample_from_discretized_mix_logistic)
from pixelcnn_pp.model import PixelCNNPP

__version__ = "0.1.0"

__all__ = [
    "PixelCNNPP", "optim", "discretized_mix_logistic_loss", "discretized_mix_logistic_log_prob",
    "nll_per_image", "bits_per_dim", "sample_from_discretized_mix_logistic",
    "energy_distance_loss",
]
