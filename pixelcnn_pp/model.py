"""The PixelCNN++ network (Salimans et al. 2017, Figure 2; the original's ``model_spec``).

Two streams run side by side: ``u`` sees only rows above the current pixel and ``ul`` sees
rows above and pixels to the left in the current row. An up pass (full, 1/2 and 1/4
resolution) pushes every activation on a stack; the down pass pops them as short-cut inputs,
and the output is a 1x1 conv of ``elu(ul)`` to the logistic-mixture parameters.
"""

import collections

import keras
import tensorflow as tf

from pixelcnn_pp import layers as L

__all__ = ["PixelCNNPP"]


def _counter():
    """names("conv2d") -> "model/conv2d_0", "model/conv2d_1", ...: the original's numbering."""
    counts = collections.Counter()

    def names(kind):
        n = counts[kind]
        counts[kind] += 1
        return f"model/{kind}_{n}"

    return names


def params_per_pixel(nr_logistic_mix, num_channels=3):
    """Output channels of the mixture head: 10M for RGB, 3M for grayscale."""
    if num_channels == 3:
        return 10 * nr_logistic_mix
    return 3 * nr_logistic_mix


class PixelCNNPP(keras.Model):
    """PixelCNN++ as a Keras model.

    Args:
      nr_resnet: gated resnet blocks per stage of the up pass (R; the down pass has R, R+1, R+1).
      nr_filters: channels of both streams (F).
      nr_logistic_mix: logistic mixture components (M).
      resnet_nonlinearity: "concat_elu", "elu" or "relu".
      dropout_p: dropout rate inside every gated resnet when ``training=True``.
      num_classes: K for a class-conditional model (h: (B, K) one-hot floats), else None.
      energy_distance: use the energy-distance head instead of the mixture head.
      num_channels: 3 (RGB) or 1 (grayscale, with the 1-channel mixture of 3M outputs).
      seed: seeds the dropout and energy-distance noise generator.
      recompute: gradient checkpointing in training: each gated resnet keeps only its inputs
        and recomputes its activations in the backward pass (the original's "checkpoints"
        collection, ``memory_saving_gradients``). Same gradients, less memory, more time.
        An attribute that may be changed between calls; not part of the saved model.

    Call: ``model(x, h=None, training=False)`` with x (B, H, W, C) float32 in [-1, 1], H and W
    divisible by 4. Returns (B, H, W, 10M) mixture parameters (3M for C = 1), or for an
    energy-distance model (10, B, H, W, C) samples in [-1, 1].
    """

    def __init__(self, nr_resnet=5, nr_filters=160, nr_logistic_mix=10,
                 resnet_nonlinearity="concat_elu", dropout_p=0.5, num_classes=None,
                 energy_distance=False, num_channels=3, seed=None, recompute=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.recompute = bool(recompute)
        if resnet_nonlinearity not in L.NONLINEARITIES:
            raise ValueError(f"resnet_nonlinearity must be one of {sorted(L.NONLINEARITIES)}, "
                             f"got {resnet_nonlinearity!r}")
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}")
        if energy_distance and num_channels != 3:
            raise ValueError("the energy-distance head is defined for RGB images only")
        self.nr_resnet = R = int(nr_resnet)
        self.nr_filters = F = int(nr_filters)
        self.nr_logistic_mix = int(nr_logistic_mix)
        self.resnet_nonlinearity = resnet_nonlinearity
        self.dropout_p = float(dropout_p)
        self.num_classes = int(num_classes) if num_classes else None
        self.energy_distance = bool(energy_distance)
        self.num_channels = int(num_channels)
        # Dropout and energy-distance noise come from this generator so that its state can be
        # checkpointed and a resumed run draws the same masks as an uninterrupted one.
        self.rng = (tf.random.Generator.from_seed(seed) if seed is not None
                    else tf.random.Generator.from_non_deterministic_state())

        names = _counter()
        block = dict(names=names, nonlinearity=resnet_nonlinearity, dropout_p=dropout_p,
                     num_classes=self.num_classes, seed_generator=self.rng)
        down = dict(conv_cls=L.DownShiftedConv2D, **block)
        down_right = dict(conv_cls=L.DownRightShiftedConv2D, has_a=True, **block)

        # Layers are created in the order the original's forward pass creates variables, so
        # the per-kind counters reproduce its names (model/conv2d_0, model/dense_0, ...).
        self.u_init = L.DownShiftedConv2D(F, (2, 3), tf1_scope=names("conv2d"))
        self.ul_init_down = L.DownShiftedConv2D(F, (1, 3), tf1_scope=names("conv2d"))
        self.ul_init_right = L.DownRightShiftedConv2D(F, (2, 1), tf1_scope=names("conv2d"))

        self.up_u, self.up_ul, self.downsample_u, self.downsample_ul = [], [], [], []
        for stage in range(3):
            if stage > 0:
                self.downsample_u.append(
                    L.DownShiftedConv2D(F, stride=(2, 2), tf1_scope=names("conv2d")))
                self.downsample_ul.append(
                    L.DownRightShiftedConv2D(F, stride=(2, 2), tf1_scope=names("conv2d")))
            for _ in range(R):
                self.up_u.append(L.GatedResnet(F, **down))
                self.up_ul.append(L.GatedResnet(F, **down_right))

        self.down_u, self.down_ul, self.upsample_u, self.upsample_ul = [], [], [], []
        for stage in range(3):
            if stage > 0:
                self.upsample_u.append(
                    L.DownShiftedDeconv2D(F, stride=(2, 2), tf1_scope=names("deconv2d")))
                self.upsample_ul.append(
                    L.DownRightShiftedDeconv2D(F, stride=(2, 2), tf1_scope=names("deconv2d")))
            for _ in range(R if stage == 0 else R + 1):
                self.down_u.append(L.GatedResnet(F, has_a=True, **down))
                self.down_ul.append(L.GatedResnet(F, **down_right))

        if self.energy_distance:
            self.ed_features = L.NetworkInNetwork(64, tf1_scope=names("dense"))
            self.ed_noise = L.NetworkInNetwork(64, tf1_scope=names("dense"))
            self.ed_hidden = L.NetworkInNetwork(64, tf1_scope=names("dense"))
            self.ed_out = L.NetworkInNetwork(3, init_scale=0.1, tf1_scope=names("dense"))
        else:
            self.out_nin = L.NetworkInNetwork(
                params_per_pixel(self.nr_logistic_mix, self.num_channels),
                tf1_scope=names("dense"))
        # Keras 3 keeps list attributes out of tf.train.Checkpoint's object graph
        # (keras-team/keras#18398): name every listed layer so checkpoints see its weights.
        for group in ("up_u", "up_ul", "downsample_u", "downsample_ul",
                      "down_u", "down_ul", "upsample_u", "upsample_ul"):
            for i, layer in enumerate(getattr(self, group)):
                setattr(self, f"{group}_{i}", layer)

    # ------------------------------------------------------------------ structure helpers
    def stage_sizes(self):
        """Blocks per stage: up pass (R, R, R), down pass (R, R+1, R+1)."""
        R = self.nr_resnet
        return (R, R, R), (R, R + 1, R + 1)

    def weight_norm_layers(self):
        """Every weight-normed layer, in forward (= data-dependent init) order."""
        out = [self.u_init, self.ul_init_down, self.ul_init_right]
        R = self.nr_resnet
        for stage in range(3):
            if stage > 0:
                out += [self.downsample_u[stage - 1], self.downsample_ul[stage - 1]]
            for i in range(stage * R, (stage + 1) * R):
                out += self.up_u[i].sublayers() + self.up_ul[i].sublayers()
        start = 0
        for stage, n in enumerate(self.stage_sizes()[1]):
            if stage > 0:
                out += [self.upsample_u[stage - 1], self.upsample_ul[stage - 1]]
            for i in range(start, start + n):
                out += self.down_u[i].sublayers() + self.down_ul[i].sublayers()
            start += n
        if self.energy_distance:
            out += [self.ed_features, self.ed_noise, self.ed_hidden, self.ed_out]
        else:
            out.append(self.out_nin)
        return out

    def tf1_variables(self):
        """{original variable name ("model/conv2d_0/V", ...): variable}. Needs a built model."""
        if not self.built_weights():
            raise ValueError("the model has no weights yet: call it once on a batch "
                             "(or run model.initialize(x)) before reading its variables")
        out = {}
        for layer in self.weight_norm_layers():
            out.update(layer.tf1_variables())
        for blk in self.up_u + self.up_ul + self.down_u + self.down_ul:
            if blk.num_classes:
                out[f"{blk.hw_scope}/hw"] = blk.hw
        return out

    def built_weights(self):
        return all(getattr(l, "V", None) is not None for l in self.weight_norm_layers())

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, x, h):
        shape = x.shape
        if shape.rank != 4:
            raise ValueError(f"PixelCNNPP expects images of shape (B, H, W, C); got {shape}")
        _, H, W, C = shape
        if H is None or W is None or H % 4 or W % 4:
            raise ValueError(
                f"PixelCNNPP needs image height and width divisible by 4 (two 2x "
                f"downsamplings); got {H}x{W}. Crop or pad the images, e.g. to "
                f"{(H or 0) // 4 * 4 or 4}x{(W or 0) // 4 * 4 or 4}.")
        if C != self.num_channels:
            raise ValueError(f"this model was built for {self.num_channels}-channel images "
                             f"(num_channels={self.num_channels}); got {C} channels")
        if self.num_classes and h is None:
            raise ValueError(f"this model is class-conditional (num_classes={self.num_classes}):"
                             " pass h, a (B, num_classes) one-hot float tensor")
        if h is not None:
            if not self.num_classes:
                raise ValueError("this model is unconditional (num_classes=None) but got h; "
                                 "build it with num_classes=K to condition on labels")
            if h.shape.rank != 2 or h.shape[-1] != self.num_classes:
                raise ValueError(f"h must have shape (B, {self.num_classes}); got {h.shape}")

    def call(self, x, h=None, training=False):
        x = tf.convert_to_tensor(x)
        if h is not None:
            h = tf.cast(tf.convert_to_tensor(h), self.compute_dtype)
        self._check_inputs(x, h)
        training = bool(training)
        x = tf.cast(x, self.compute_dtype)
        R = self.nr_resnet

        def gr(blk, v, *a_parts):
            """blk(v, a=concat(a_parts)) (no a when a_parts is empty)."""
            def run(v, *a_parts, seed=None):
                a = (tf.concat(a_parts, axis=-1) if len(a_parts) > 1
                     else a_parts[0] if a_parts else None)
                return blk(v, a=a, h=h, training=training, seed=seed)

            if not (training and self.recompute):
                return run(v, *a_parts)
            # Gradient checkpointing: only v and a_parts are kept for the backward pass, which
            # recomputes the block (the concatenation of a included). The dropout seed is drawn
            # here, once, so that the recomputation draws the same mask.
            seed = blk.dropout_seed() if blk.dropout_p > 0 else None
            return tf.recompute_grad(lambda v, *a_parts: run(v, *a_parts, seed=seed))(
                v, *a_parts)

        # ----- up pass
        # A constant-ones channel tells the image from the zero padding.
        x_pad = tf.concat([x, tf.ones_like(x[..., :1])], axis=-1)
        u_list = [L.down_shift(self.u_init(x_pad))]
        ul_list = [L.down_shift(self.ul_init_down(x_pad))
                   + L.right_shift(self.ul_init_right(x_pad))]
        for stage in range(3):
            if stage > 0:
                u_list.append(self.downsample_u[stage - 1](u_list[-1]))
                ul_list.append(self.downsample_ul[stage - 1](ul_list[-1]))
            for i in range(stage * R, (stage + 1) * R):
                u_list.append(gr(self.up_u[i], u_list[-1]))
                ul_list.append(gr(self.up_ul[i], ul_list[-1], u_list[-1]))

        # ----- down pass
        u, ul = u_list.pop(), ul_list.pop()
        start = 0
        for stage, n in enumerate(self.stage_sizes()[1]):
            if stage > 0:
                u = self.upsample_u[stage - 1](u)
                ul = self.upsample_ul[stage - 1](ul)
            for i in range(start, start + n):
                u = gr(self.down_u[i], u, u_list.pop())
                ul = gr(self.down_ul[i], ul, u, ul_list.pop())
            start += n
        assert not u_list and not ul_list

        if self.energy_distance:
            return self._energy_distance_head(ul)
        out = self.out_nin(tf.nn.elu(ul))                           # (B, H, W, 10M)
        return out if out.dtype == tf.float64 else tf.cast(out, tf.float32)

    def _energy_distance_head(self, ul, noise=None):
        """(B, H, W, F) -> (10, B, H, W, 3): ten samples per image (the original's head)."""
        f = self.ed_features(tf.nn.elu(ul))
        f = tf.tile(f, [10, 1, 1, 1])                               # (10B, H, W, 64)
        if noise is None:
            shape = tf.concat([tf.shape(f)[:-1], [4]], 0)
            noise = self.rng.uniform(shape, minval=-1.0, maxval=1.0)
        f = f + self.ed_noise(tf.cast(noise, f.dtype))
        f = self.ed_hidden(L.concat_elu(f))
        x = tf.tanh(tf.cast(self.ed_out(L.concat_elu(f)), tf.float32))
        return tf.stack(tf.split(x, 10, axis=0))

    # ------------------------------------------------------------------ data-dependent init
    def initialize(self, x, h=None, training=True):
        """Data-dependent initialisation on one batch (docs/ORIGINAL.md §1); works on an unbuilt model.

        x: (B, H, W, C) float32 in [-1, 1]; h: (B, num_classes) or None. One forward pass in
        which every weight-normed layer, in forward order, rescales its g and b so its output
        has per-channel mean 0 and variance init_scale**2 on this batch. As in the original,
        dropout is active during the pass (``training=True``); pass ``training=False`` to
        initialise without it. Runs eagerly; returns the network output.
        """
        if not tf.executing_eagerly():
            raise RuntimeError("initialize runs eagerly; call it outside any tf.function")
        wn = self.weight_norm_layers()  # exist before the model is built
        try:
            for layer in wn:
                layer.ddi = True
            return self(x, h=h, training=training)
        finally:
            for layer in wn:
                layer.ddi = False
