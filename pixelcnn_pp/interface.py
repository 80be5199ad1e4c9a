"""What every model of this package offers the rest of it, declared once.

``PixelCNNPP`` (``model.py``) and the masked-convolution baseline ``PixelCNN``
(``baseline.py``) both implement ``AutoregressiveModel``: it is what training, evaluation,
scoring and sample files rely on beyond a Keras model's own surface (``trainable_variables``,
checkpointing), so either model can be passed to them. ``isinstance(model,
AutoregressiveModel)`` checks that the names exist (not their signatures).

What only PixelCNN++ has (its layout, ``weight_norm_layers()``, the energy-distance head) is
not part of it: code that needs those (the samplers of ``sampling.py``, image completion,
``convert.py``) takes a ``PixelCNNPP``.
"""

from typing import Optional, Protocol, runtime_checkable

import tensorflow as tf

__all__ = ["AutoregressiveModel"]


@runtime_checkable
class AutoregressiveModel(Protocol):
    """A Keras model of p(x) = prod_i p(x_i | x_<i) over the sub-pixels of (H, W, C) images,
    or over the positions of (H, W) code maps.

    Images are float32 (B, H, W, C) in [-1, 1] on the 8-bit grid; code maps (B, H, W) ints in
    [0, num_categories); ``out`` is what calling the model returns (its likelihood's
    parameters; its shape is the model's own). A PixelCNNPP
    with the energy-distance head has no likelihood: its ``nll_per_image`` and
    ``subpixel_log_prob`` raise ``InvalidInputError``.
    """

    num_channels: int                       # C: 3 (RGB) or 1 (grayscale)
    num_classes: Optional[int]              # K of a class-conditional model, else None
    num_categories: Optional[int]           # K of a prior over codes in [0, K), else None
    spatial_channels: Optional[int]         # D of a spatial condition (B, Hs, Ws, D), else None
    rng: Optional[tf.random.Generator]      # dropout's generator, checkpointed; None: none
    fast_ops: bool                          # built with the speed-ups of fast_ops.py

    def call(self, x, h=None, training=False):
        """x (B, H, W, C) or codes (B, H, W); h (B, D) or None; with spatial_channels, also
        ``spatial=`` (B, Hs, Ws, D) -> out. Called as ``model(x, ...)``."""

    def initialize(self, x, h=None, training=True):
        """Create the weights (and run any data-dependent initialisation) on one batch x;
        eager; returns out."""

    def objective(self, x, out):
        """The training objective summed over the batch: a float32 scalar, in nats."""

    def nll_per_image(self, x, out):
        """(B,) negative log-likelihood of each image, in nats."""

    def subpixel_log_prob(self, x, out):
        """(B, H, W, C) log p of each sub-pixel given all before it, in nats; (B, H, W) of each
        code."""

    def sample_images(self, batch_size, image_shape, h=None, seed=0, method=None, **kwargs):
        """(batch_size, H, W, C) float32 images in [-1, 1] drawn from the model; image_shape
        (H, W, C); a seed fixes them. kwargs: ``jit_compile``, ``progress(done, total)``."""
