"""The original's sampler (docs/ORIGINAL.md §3): one full network pass per pixel.

Start from zeros and, for every pixel (or code) in raster order, run the whole network on the
current canvas and copy the value drawn at that position in: H·W full passes per batch. Each
row's W passes run as one compiled loop. The model pads and masks any H, W itself.
"""

import weakref

import tensorflow as tf

from pixelcnn_pp.sampling.head import Head

__all__ = ["NaiveSampler"]


def _keep_given(given, num_given):
    """given (B, H, W, C) with the positions >= num_given (raster order) set to zero."""
    _, H, W, _ = given.shape
    keep = tf.reshape(tf.range(H * W) < num_given, [1, H, W, 1])
    return tf.where(keep, given, tf.zeros_like(given))


class NaiveSampler:
    """The original's loop for B images (or code maps) of H x W, each row compiled as one
    loop; ``temperature`` as ``sampling.sample``."""

    def __init__(self, model, B, H, W, jit, temperature=1.0):
        self._model, self.B, self.H, self.W = weakref.ref(model), B, H, W
        self.head = Head(model, temperature)
        self.C = self.head.C
        self._row = tf.function(self._row_fn, jit_compile=jit, autograph=False)

    @property
    def model(self):
        """The model, held by a weak reference: samplers are cached per model and must not
        keep it alive."""
        return self._model()

    def _row_fn(self, x, i, j0, noise, h, spatial):
        """Row i of the canvas x (B, H, W, C) from column j0 on (the positions before it are
        kept as they are in x); noise: (W, B, .) per position of the row. Returns the new x."""
        model, B, H, W, head = self.model, self.B, self.H, self.W, self.head

        def body(j, x):
            pos = tf.reshape(tf.one_hot(i * W + j, H * W, on_value=True, off_value=False),
                             [1, H, W, 1])

            def head_noise():                                  # (10B, H, W, 4)
                n = tf.pad(tf.gather(noise[2], j), [[0, 9 * B], [0, 0]])
                return tf.where(pos, n[:, None, None, :], 0.0)

            if head.kind == "energy":
                out = model(x, h=h, spatial=spatial, energy_noise=head_noise())
                value = out[0][:, i, j]                          # first of the ten samples
            else:
                out = model(head.model_input(x), h=h, spatial=spatial)[:, i, j]   # (B, P)
                value = head.draw(out, [tf.gather(n, j) for n in noise])
            return j + 1, tf.where(pos, value[:, None, None, :], x)

        _, x = tf.while_loop(lambda j, x: j < W, body, (j0, x))
        return x

    def run(self, h, seed, progress, given, num_given, spatial=None):
        """The canvas (B, H, W, C), float32 numpy; positions < num_given (raster order) are
        ``given``'s (B, H, W, C), never drawn: the loop starts at position num_given, on a
        canvas holding the given values before it and zeros from it on (as when sampling from
        scratch). h: (B, h_dim) or None; spatial: (B, Hs, Ws, Ds) or None."""
        x = _keep_given(given, num_given)
        seed = tf.constant(seed, tf.int64)
        first_row, first_col = divmod(num_given, self.W)
        for i in range(first_row, self.H):
            noise = self.head.noise(seed, tf.constant(i), 1, self.W, self.B)
            j0 = tf.constant(first_col if i == first_row else 0)
            x = self._row(x, tf.constant(i), j0, [n[0] for n in noise], h, spatial)
            if progress is not None:
                progress(i + 1, self.H)
        return x.numpy()
