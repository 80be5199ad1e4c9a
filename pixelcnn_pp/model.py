"""The PixelCNN++ network (Salimans et al. 2017, Figure 2; the original's ``model_spec``).

Two streams run side by side: ``u`` sees only rows above the current pixel and ``ul`` sees
rows above and pixels to the left in the current row. An up pass (full, 1/2 and 1/4
resolution) pushes every activation on a stack; the down pass pops them as short-cut inputs,
and the output is a 1x1 conv of ``elu(ul)`` to the logistic-mixture parameters.

Beyond the original (each marked ``Deviation``), what a PixelCNN++ prior needs: a K-way head
over discrete codes (``num_categories``), a global condition of any floats (``h_dim``), a
spatial condition map (``spatial_channels``), and any H, W >= 1 (padding at the bottom and
right, masked so that it is never seen).
"""

import contextlib
import functools

import keras
import tensorflow as tf

from pixelcnn_pp import layers as L
from pixelcnn_pp.likelihood import (categorical_log_prob, categorical_loss,
                                    discretized_mix_logistic_loss, energy_distance_loss,
                                    nll_per_image, subpixel_log_prob)
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["PixelCNNPP"]


def params_per_pixel(nr_logistic_mix, num_channels=3):
    """Output channels of the mixture head: 10M for RGB, 3M for grayscale."""
    if num_channels == 3:
        return 10 * nr_logistic_mix
    return 3 * nr_logistic_mix   # Deviation: grayscale is new (weights, means, log scales)


def _check_arguments(resnet_nonlinearity, num_channels, energy_distance, num_categories,
                     num_classes, h_dim):
    if resnet_nonlinearity not in L.NONLINEARITIES:
        raise InvalidInputError(f"resnet_nonlinearity must be one of "
                                f"{sorted(L.NONLINEARITIES)}, got {resnet_nonlinearity!r}")
    if num_channels not in (1, 3):
        raise InvalidInputError(
            f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels}")
    if energy_distance and (num_channels != 3 or num_categories):
        raise InvalidInputError("the energy-distance head is defined for RGB images only")
    if num_categories is not None and int(num_categories) < 2:
        raise InvalidInputError(f"num_categories must be >= 2 (codes in [0, K)); got "
                                f"{num_categories}")
    if num_classes and h_dim and int(h_dim) != int(num_classes):
        raise InvalidInputError(f"num_classes={num_classes} conditions on (B, {num_classes}) "
                                f"one-hot labels, but h_dim={h_dim}: give one of them")


def _ceil_div(a, b):
    return -(-a // b)


class PixelCNNPP(keras.Model):
    """PixelCNN++ as a Keras model.

    Args:
      nr_resnet: gated resnet blocks per stage of the up pass (R; the down pass has R, R+1, R+1).
      nr_filters: channels of both streams (F).
      nr_logistic_mix: logistic mixture components (M).
      resnet_nonlinearity: "concat_elu", "elu" or "relu".
      dropout_p: dropout rate inside every gated resnet when ``training=True``.
      num_classes: K for a class-conditional model (h: (B, K) one-hot floats), else None.
      num_categories: K for a prior over discrete codes: x is (B, H, W) ints in [0, K), fed
        to the first convolutions one-hot, and the head gives (B, H, W, K) logits. None: the
        mixture head over images (the original's).
      h_dim: D for a global condition h (B, D) of any floats (default: num_classes).
      spatial_channels: D for a spatial condition map (B, Hs, Ws, D) with H / Hs and W / Ws
        whole numbers, seen whole by every position (see ``_condition_features``).
      energy_distance: use the energy-distance head instead of the mixture head.
      num_channels: 3 (RGB) or 1 (grayscale, with the 1-channel mixture of 3M outputs).
      seed: seeds the dropout and energy-distance noise generator.
      recompute: gradient checkpointing in training: each gated resnet keeps only its inputs
        and recomputes its activations in the backward pass (the original's "checkpoints"
        collection, ``memory_saving_gradients``). Same gradients, less memory, more time.
        An attribute that may be changed between calls; not part of the saved model.
      fast_ops: the layers compute the same formulas with the faster versions of
        ``fast_ops.py`` (False: the original's plain ops). Fixed when the model is built;
        not part of the saved model.

    Call: ``model(x, h=None, spatial=None, training=False)`` with x (B, H, W, C) float32 in
    [-1, 1] (or (B, H, W) int codes), any H, W >= 1. Returns (B, H, W, 10M) mixture parameters
    (3M for C = 1), (B, H, W, K) logits over codes, or for an energy-distance model
    (10, B, H, W, C) samples in [-1, 1].

    The rest of the package uses it through ``interface.AutoregressiveModel`` (``initialize``,
    ``objective``, ``nll_per_image``, ``subpixel_log_prob``, ``sample_images``, ...).
    """

    def __init__(self, nr_resnet=5, nr_filters=160, nr_logistic_mix=10,
                 resnet_nonlinearity="concat_elu", dropout_p=0.5, num_classes=None,
                 energy_distance=False, num_channels=3, seed=None, recompute=False,
                 fast_ops=False, num_categories=None, h_dim=None, spatial_channels=None,
                 **kwargs):
        super().__init__(**kwargs)
        _check_arguments(resnet_nonlinearity, num_channels, energy_distance, num_categories,
                         num_classes, h_dim)
        self.nr_resnet = R = int(nr_resnet)
        self.nr_filters = F = int(nr_filters)
        self.nr_logistic_mix = int(nr_logistic_mix)
        self.resnet_nonlinearity = resnet_nonlinearity
        self.dropout_p = float(dropout_p)
        self.num_classes = int(num_classes) if num_classes else None
        self.energy_distance = bool(energy_distance)
        self.num_channels = int(num_channels)
        self.num_categories = int(num_categories) if num_categories else None
        self.h_dim = int(h_dim or num_classes or 0) or None
        self.spatial_channels = int(spatial_channels) if spatial_channels else None
        self.recompute = bool(recompute)
        self.fast_ops = bool(fast_ops)   # decided once, here, for every layer with a fast path
        # Dropout and energy-distance noise come from this generator so that its state can be
        # checkpointed and a resumed run draws the same masks as an uninterrupted one.
        self.rng = (tf.random.Generator.from_seed(seed) if seed is not None
                    else tf.random.Generator.from_non_deterministic_state())

        # ----- the layout, written once, in forward order (``weight_norm_layers``)
        DownConv = functools.partial(L.DownShiftedConv2D, F, fast_ops=self.fast_ops)
        DownRightConv = functools.partial(L.DownRightShiftedConv2D, F, fast_ops=self.fast_ops)
        block = dict(nonlinearity=resnet_nonlinearity, dropout_p=dropout_p,
                     h_dim=self.h_dim, seed_generator=self.rng, fast_ops=self.fast_ops,
                     has_spatial=bool(self.spatial_channels))
        if self.spatial_channels:
            # Deviation: the spatial condition's stack (not in the original): two 3x3 convs at
            # the map's resolution, the second also seeing the map's mean features, so that
            # every position sees the whole map.
            self.cond_in = L.WNConv2D(F, (3, 3), fast_ops=self.fast_ops)
            self.cond_mid = L.WNConv2D(F, (3, 3), fast_ops=self.fast_ops)
        # The u stream's blocks see rows above; the ul stream's also pixels to the left, and
        # take a short-cut input.
        ResU = functools.partial(L.GatedResnet, F, L.DownShiftedConv2D, **block)
        ResUL = functools.partial(L.GatedResnet, F, L.DownRightShiftedConv2D, has_a=True, **block)

        self.u_init = DownConv((2, 3))
        self.ul_init_down = DownConv((1, 3))
        self.ul_init_right = DownRightConv((2, 1))
        # Up pass: 3 stages (full, 1/2, 1/4 resolution) of R (u, ul) block pairs, a strided
        # (u, ul) conv pair before stages 1 and 2.
        self.up, self.downsample = [], []
        for stage in range(3):
            if stage > 0:
                self.downsample.append(self._pair(
                    "downsample", DownConv(stride=(2, 2)), DownRightConv(stride=(2, 2))))
            self.up.append([self._pair("up", ResU(), ResUL()) for _ in range(R)])
        # Down pass: 3 stages (1/4, 1/2, full) of R, R+1, R+1 pairs, a transposed (u, ul)
        # conv pair before stages 1 and 2. Each block takes one short-cut from the up pass.
        self.down, self.upsample = [], []
        for stage in range(3):
            if stage > 0:
                self.upsample.append(self._pair(
                    "upsample", L.DownShiftedDeconv2D(F, stride=(2, 2), fast_ops=self.fast_ops),
                    L.DownRightShiftedDeconv2D(F, stride=(2, 2), fast_ops=self.fast_ops)))
            self.down.append([self._pair("down", ResU(has_a=True), ResUL())
                              for _ in range(R if stage == 0 else R + 1)])

        if self.energy_distance:
            self.ed_features, self.ed_noise, self.ed_hidden = (
                L.NetworkInNetwork(64) for _ in range(3))
            self.ed_out = L.NetworkInNetwork(3, init_scale=0.1)
        elif self.num_categories:
            self.out_nin = L.NetworkInNetwork(self.num_categories)   # Deviation: K-way head
        else:
            self.out_nin = L.NetworkInNetwork(
                params_per_pixel(self.nr_logistic_mix, self.num_channels))

    def _pair(self, group, u, ul):
        """(u, ul), also attached as self.<group>_u_<i> and self.<group>_ul_<i>, i counting the
        group's pairs: the names checkpoints know them by (Keras 3 keeps layers held in lists
        out of tf.train.Checkpoint's object graph, keras-team/keras#18398)."""
        i = 0
        while hasattr(self, f"{group}_u_{i}"):
            i += 1
        setattr(self, f"{group}_u_{i}", u)
        setattr(self, f"{group}_ul_{i}", ul)
        return u, ul

    # ------------------------------------------------------------------ structure
    def blocks(self):
        """Every gated resnet, u and ul of each pair, in forward order."""
        return [b for stages in (self.up, self.down) for stage in stages
                for pair in stage for b in pair]

    def weight_norm_layers(self):
        """Every weight-normed layer in forward order, which is the data-dependent init's
        order and the order the original creates its variables in (``convert.py`` numbers
        them by it)."""
        out = [self.cond_in, self.cond_mid] if self.spatial_channels else []
        out += [self.u_init, self.ul_init_down, self.ul_init_right]
        for stages, resample in ((self.up, self.downsample), (self.down, self.upsample)):
            for stage, pairs in enumerate(stages):
                if stage > 0:
                    out += resample[stage - 1]
                out += [layer for pair in pairs for blk in pair for layer in blk.sublayers()]
        if self.energy_distance:
            return out + [self.ed_features, self.ed_noise, self.ed_hidden, self.ed_out]
        return out + [self.out_nin]

    def effective_weights(self):
        """What weight normalisation makes of each weight-normed layer's V and g, in
        ``weight_norm_layers`` order: a convolution's kernel g V / ||V||, a dense layer's
        per-output scale g / ||V||. An evaluation pass computes them once (``given_weights``)
        instead of in every step, as the original does; the values are the same."""
        return [layer.effective() for layer in self.weight_norm_layers()]

    @contextlib.contextmanager
    def given_weights(self, weights):
        """Calls inside use ``weights`` (``effective_weights()``, computed before) instead of
        normalising V and g again: for evaluation (no gradient reaches V and g through them)."""
        layers = self.weight_norm_layers()
        if len(weights) != len(layers):
            raise ValueError(f"given_weights: {len(weights)} weights for {len(layers)} layers")
        for layer, w in zip(layers, weights):
            layer.given = w
        try:
            yield
        finally:
            for layer in layers:
                layer.given = None

    def built_weights(self):
        """Whether the weights exist (the model was called once, or initialised)."""
        return all(getattr(l, "V", None) is not None for l in self.weight_norm_layers())

    def build(self, input_shape):
        """Nothing to do here: each layer creates its weights when the first call reaches it.
        (Without this method Keras would build the model by tracing a whole symbolic call
        first, which costs as much as the call itself at the full model's size.)"""

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, x, h, spatial):
        shape = x.shape
        if self.num_categories:
            if shape.rank != 3 or not (x.dtype.is_integer):
                raise InvalidInputError(f"this model is a prior over codes (num_categories="
                                        f"{self.num_categories}): x must be (B, H, W) integer "
                                        f"codes; got {x.dtype.name} {shape}")
        elif shape.rank != 4:
            raise InvalidInputError(f"PixelCNNPP expects images of shape (B, H, W, C); got "
                                    f"{shape}")
        elif shape[3] != self.num_channels:
            raise InvalidInputError(f"this model was built for {self.num_channels}-channel "
                                    f"images (num_channels={self.num_channels}); got "
                                    f"{shape[3]} channels")
        H, W = shape[1], shape[2]
        if H is None or W is None or H < 1 or W < 1:
            raise InvalidInputError(f"the height and width must be known and >= 1; got {H}x{W}")
        if self.h_dim and h is None:
            what = (f"class-conditional (num_classes={self.num_classes}): pass h, a "
                    f"(B, {self.num_classes}) one-hot float tensor" if self.num_classes else
                    f"conditional (h_dim={self.h_dim}): pass h, (B, {self.h_dim}) floats")
            raise InvalidInputError(f"this model is {what}")
        if h is not None:
            if not self.h_dim:
                raise InvalidInputError("this model is unconditional (num_classes=None) but got "
                                        "h; build it with num_classes=K (or h_dim=D) to "
                                        "condition on it")
            if h.shape.rank != 2 or h.shape[-1] != self.h_dim:
                raise InvalidInputError(f"h must have shape (B, {self.h_dim}); got {h.shape}")
        if self.spatial_channels and spatial is None:
            raise InvalidInputError(f"this model is conditioned on a spatial map "
                                    f"(spatial_channels={self.spatial_channels}): pass spatial,"
                                    f" (B, Hs, Ws, {self.spatial_channels}) floats")
        if spatial is not None:
            if not self.spatial_channels:
                raise InvalidInputError("this model takes no spatial map; build it with "
                                        "spatial_channels=D to condition on one")
            s = spatial.shape
            if (s.rank != 4 or s[3] != self.spatial_channels or not s[1] or not s[2]
                    or H % s[1] or W % s[2]):
                raise InvalidInputError(
                    f"spatial must be (B, Hs, Ws, {self.spatial_channels}) with {H} / Hs and "
                    f"{W} / Ws whole numbers; got {s}")

    def call(self, x, h=None, spatial=None, training=False, energy_noise=None):
        """energy_noise: the energy-distance head's U(-1, 1) noise, (10B, H, W, 4); None draws
        it from the model's generator (the samplers pass their per-position noise)."""
        x = tf.convert_to_tensor(x)
        if h is not None:
            h = tf.cast(tf.convert_to_tensor(h), self.compute_dtype)
        if spatial is not None:
            spatial = tf.cast(tf.convert_to_tensor(spatial), self.compute_dtype)
        self._check_inputs(x, h, spatial)
        H, W = x.shape[1], x.shape[2]
        if self.num_categories:
            # Deviation: codes enter one-hot, as K channels (the first convolutions then hold
            # a learned embedding per code and tap).
            x = tf.one_hot(tf.cast(x, tf.int32), self.num_categories, dtype=self.compute_dtype)
        x = tf.cast(x, self.compute_dtype)
        x = tf.concat([x, tf.ones_like(x[..., :1])], axis=-1)      # ones: image vs padding
        # Deviation: any H, W: padded at the bottom and right to multiples of 4 (the two 2x
        # downsamplings), masked inside the network (``_masks``), cropped at the end.
        Hp, Wp = _ceil_div(H, 4) * 4, _ceil_div(W, 4) * 4
        if (Hp, Wp) == (H, W):           # the original's sizes: nothing to pad or crop
            return self._forward(x, (H, W), h, spatial, training, energy_noise)
        pad = [[0, 0], [0, Hp - H], [0, Wp - W], [0, 0]]
        x = tf.pad(x, pad)
        if energy_noise is not None:
            energy_noise = tf.pad(energy_noise, pad)
        out = self._forward(x, (H, W), h, spatial, training, energy_noise)
        return out[:, :, :H, :W] if self.energy_distance else out[:, :H, :W]

    def _masks(self, padded_hw, hw):
        """Per resolution (full, 1/2, 1/4): (1, Hr, Wr, 1), 1 where the image is and 0 at its
        padding; None for every resolution when there is no padding."""
        if tuple(padded_hw) == tuple(hw):
            return [None] * 3
        masks = []
        for k in (1, 2, 4):      # a position at 1/k resolution covers k x k image positions
            rows = tf.range(padded_hw[0] // k) < _ceil_div(hw[0], k)
            cols = tf.range(padded_hw[1] // k) < _ceil_div(hw[1], k)
            mask = tf.cast(rows[:, None] & cols[None, :], self.compute_dtype)
            masks.append(mask[None, :, :, None])
        return masks

    def _condition_features(self, spatial, padded_hw, hw):
        """The spatial condition at each resolution (full, 1/2, 1/4): (B, Hr, Wr, 2F).

        Not causal in the map, which is fully observed (the condition, not the sequence, as
        the condition stacks of PixelSNAIL and VQ-VAE-2 priors): two 3x3 convs at the map's
        resolution, the second also given the mean of the first's features over the whole
        map, so that a change anywhere in the map reaches every position, the first included.
        Then repeated up to the image's size, padded, and averaged down by 2 and 4."""
        e = L.concat_elu(self.cond_in(spatial))                      # (B, Hs, Ws, 2F)
        whole = tf.broadcast_to(tf.reduce_mean(e, axis=[1, 2], keepdims=True), tf.shape(e))
        c = L.concat_elu(self.cond_mid(tf.concat([e, whole], axis=-1)))
        (H, W), (Hs, Ws) = hw, spatial.shape[1:3]
        c = tf.repeat(tf.repeat(c, H // Hs, axis=1), W // Ws, axis=2)   # (B, H, W, 2F)
        c = tf.pad(c, [[0, 0], [0, padded_hw[0] - H], [0, padded_hw[1] - W], [0, 0]])
        return [c] + [tf.nn.avg_pool2d(c, k, k, "VALID") for k in (2, 4)]

    def _forward(self, x_pad, hw, h, spatial, training, energy_noise):
        """The network on x_pad (B, Hp, Wp, C + 1), the image (and its ones channel) padded
        to multiples of 4; hw: the image's (H, W). Returns the padded output."""
        padded_hw = x_pad.shape[1:3]
        masks = self._masks(padded_hw, hw)
        conds = (self._condition_features(spatial, padded_hw, hw) if spatial is not None
                 else [None] * 3)
        x_pad = x_pad if masks[0] is None else x_pad * masks[0]

        def at(r):      # what the blocks at resolution r take besides x and a
            return dict(h=h, training=bool(training), recompute=self.recompute,
                        s=conds[r], valid=masks[r])

        def masked(t, r):
            return t if masks[r] is None else t * masks[r]

        # ----- up pass: every output is pushed on a stack for the down pass
        u_list = [masked(L.down_shift(self.u_init(x_pad)), 0)]
        ul_list = [masked(L.down_shift(self.ul_init_down(x_pad))
                          + L.right_shift(self.ul_init_right(x_pad)), 0)]
        for stage, pairs in enumerate(self.up):                     # resolution r = stage
            if stage > 0:
                down_u, down_ul = self.downsample[stage - 1]
                u_list.append(masked(down_u(u_list[-1]), stage))
                ul_list.append(masked(down_ul(ul_list[-1]), stage))
            for u_block, ul_block in pairs:
                u_list.append(u_block(u_list[-1], **at(stage)))
                ul_list.append(ul_block(ul_list[-1], a=u_list[-1], **at(stage)))

        # ----- down pass: each block pops its short-cut input off the stacks
        u, ul = u_list.pop(), ul_list.pop()
        for stage, pairs in enumerate(self.down):                   # resolution r = 2 - stage
            r = 2 - stage
            if stage > 0:
                up_u, up_ul = self.upsample[stage - 1]
                u, ul = masked(up_u(u), r), masked(up_ul(ul), r)
            for u_block, ul_block in pairs:
                u = u_block(u, a=u_list.pop(), **at(r))
                ul = ul_block(ul, a=[u, ul_list.pop()], **at(r))   # a = concat([u, ul_list.pop()])
        assert not u_list and not ul_list

        if self.energy_distance:
            return self._energy_distance_head(ul, energy_noise)
        out = self.out_nin(tf.nn.elu(ul))                   # (B, Hp, Wp, 10M) or (..., K)
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

    # ------------------------------------------------------ interface.AutoregressiveModel
    def objective(self, x, out):
        """The training objective summed over the batch, in nats (float32): the negative
        log-likelihood of the discretized logistic mixture (``nn.py:
        discretized_mix_logistic_loss``), of the codes under the K-way head, or the energy
        distance for that head."""
        if self.energy_distance:
            return energy_distance_loss(x, out)
        if self.num_categories:
            return categorical_loss(x, out)
        return discretized_mix_logistic_loss(x, out)

    def nll_per_image(self, x, out):
        """(B,) negative log-likelihood of each image (or code map), nats."""
        if self.energy_distance:
            raise InvalidInputError("an energy-distance model has no likelihood")
        if self.num_categories:
            return categorical_loss(x, out, sum_all=False)
        return nll_per_image(x, out)

    def subpixel_log_prob(self, x, out):
        """(B, H, W, C) log p of each sub-pixel given all before it, nats
        (``likelihood.subpixel_log_prob``); (B, H, W) of each code for the K-way head."""
        if self.energy_distance:
            raise InvalidInputError("an energy-distance model has no likelihood")
        if self.num_categories:
            return categorical_log_prob(x, out)
        return subpixel_log_prob(x, out)

    def sample_images(self, batch_size, image_shape, h=None, seed=0, method="fast", **kwargs):
        """``sampling.sample(self, ...)``: (batch_size, H, W, C) float32 images in [-1, 1], or
        for a prior over codes (image_shape (H, W)) int32 codes (batch_size, H, W). kwargs
        (spatial, temperature, averages, ...) go to ``sample``."""
        from pixelcnn_pp.sampling import sample
        return sample(self, batch_size, image_shape=image_shape, h=h, seed=seed, method=method,
                      **kwargs)

    # ------------------------------------------------------------------ data-dependent init
    def initialize(self, x, h=None, training=True, spatial=None):
        """Data-dependent initialisation on one batch (docs/ORIGINAL.md §1); works on an unbuilt
        model.

        x: (B, H, W, C) float32 in [-1, 1] (or (B, H, W) codes); h: (B, h_dim) or None;
        spatial: (B, Hs, Ws, spatial_channels) or None. One forward pass in
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
            return self(x, h=h, spatial=spatial, training=training)
        finally:
            for layer in wn:
                layer.ddi = False
