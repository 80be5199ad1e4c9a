"""What the samplers draw at one position, by the model's head, in one place for both.

Both samplers keep the values drawn so far on a float32 canvas (B, H, W, C): an image's
pixels (C = num_channels), or a prior's codes (C = 1, the code k stored as the float k, exact
for any K below 2**24). The head says how that canvas enters the network, which noise a
position takes, and how the network's output at a position becomes its value:

* mixture (the original's): the discretized logistic mixture's parameters (B, 10M) -> a pixel;
* categorical (a prior over codes): (B, K) logits -> a code, by Gumbel-max;
* energy distance: the head's own layers on the features, with its uniform noise, -> a pixel.

``temperature`` (> 0) divides the logits of the codes or of the mixture's components and, for
the mixture, multiplies the logistic scales (``likelihood``); 1 is the model's distribution.
"""

import tensorflow as tf

from pixelcnn_pp import layers as L
from pixelcnn_pp.likelihood import sample_categorical
from pixelcnn_pp.sampling.fast_weights import dense
from pixelcnn_pp.sampling.noise import rows_noise, sample_pixel

__all__ = ["Head"]


class Head:
    """The head of ``model`` at a temperature: see the module docstring."""

    def __init__(self, model, temperature=1.0):
        self.kind = ("energy" if model.energy_distance else
                     "categorical" if model.num_categories else "mixture")
        self.K = model.num_categories or 0
        self.M = model.nr_logistic_mix
        self.C = 1 if self.K else model.num_channels          # canvas values per position
        self.temperature = float(temperature)

    def noise(self, seed, i0, rows, width, batch_size):
        """The noise of every position of rows i0 .. i0 + rows - 1 of a ``width``-wide canvas:
        a tuple of (rows, width, B, .) float32 (``noise.rows_noise``)."""
        return rows_noise(seed, i0, rows, width, batch_size, self.M, self.C,
                          self.kind == "energy", self.K)

    def model_input(self, canvas):
        """The canvas (B, H, W, C) as the model is called on it: (B, H, W) int32 codes, or
        the images themselves."""
        return tf.cast(canvas[..., 0], tf.int32) if self.K else canvas

    def inputs(self, values, dtype):
        """Canvas values (..., C) -> the network's input channels (..., Cin) in ``dtype``,
        before the ones channel: the codes one-hot (as ``PixelCNNPP.call``), or the pixels."""
        if self.K:
            return tf.one_hot(tf.cast(values[..., 0], tf.int32), self.K, dtype=dtype)
        return tf.cast(values, dtype)

    def draw(self, out, noise):
        """The value (B, C) float32 at one position from the network's output there, out (B, P)
        mixture parameters or (B, K) logits; noise: this position's (``noise``, indexed)."""
        out = tf.cast(out, tf.float32)        # sampled from in float32, as the likelihood
        if self.K:
            code = sample_categorical(out, noise[0], self.temperature)
            return tf.cast(code, tf.float32)[:, None]
        return sample_pixel(out, noise[:2], self.M, self.C, self.temperature)

    def from_features(self, w, ul, noise, dtype):
        """The fast sampler's output layer and draw: the last ul features (B, F) -> the value
        (B, C); w: ``fast_weights.Head``."""
        f = tf.nn.elu(ul)
        if self.kind == "energy":
            f = dense(f, w.ed_features) + dense(tf.cast(noise[2], dtype), w.ed_noise)
            f = dense(L.concat_elu(f), w.ed_hidden)
            return tf.tanh(tf.cast(dense(L.concat_elu(f), w.ed_out), tf.float32))
        return self.draw(dense(f, w.out), noise)

    def output(self, canvas):
        """The canvas (B, H, W, C) float32 numpy as ``sample`` returns it: (B, H, W) int32
        codes, or the images."""
        return canvas[..., 0].astype("int32") if self.K else canvas
