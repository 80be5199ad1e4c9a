"""The fast sampler's view of the model's weights: every layer's effective (weight-normalised)
weights, cut the way the sampler applies them, per level of the network.

A level is one resolution (0: full, 1: 1/2, 2: 1/4): the model's up-pass stage ``model.up[l]``,
its down-pass stage ``model.down[L-1-l]`` (the down pass runs from the coarsest level to the
full resolution) and the conv pairs that connect it to the finer level (``model.downsample``,
``model.upsample``). Everything is read from those lists, so the sampler follows whatever
layout the model was built with.

The structures are named tuples (tf.nest structures), passed into the compiled functions.
"""

from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from pixelcnn_pp.layers import concat_rows

__all__ = ["Dense", "Conv", "ULConv", "Block", "ULInit", "StridedULConv", "Head", "Level",
           "Weights", "read_weights", "dense"]


class Dense(NamedTuple):
    """A weight-normed dense / nin layer as a plain matrix (Cin, F) and bias (F,)."""
    w: tf.Tensor
    b: tf.Tensor


class Conv(NamedTuple):
    """A down-shifted (2, 3) conv of the u stream, applied to two rows at once."""
    k: tf.Tensor                 # (2, 3, Cin, F)
    b: tf.Tensor


class ULConv(NamedTuple):
    """A (2, 2) down-right conv of the ul stream split by rows: the taps on row i-1 (applied
    to the whole row above) and, side by side, taps (1, 1) and (1, 0) on row i (the current
    position, and the next one's left neighbour)."""
    top: tf.Tensor               # (1, 2, Cin, F)
    cur: tf.Tensor               # (Cin, 2F): [tap (1, 1) | tap (1, 0)]
    b: tf.Tensor


class Block(NamedTuple):
    """One gated resnet: its two convs (Conv or ULConv), the global condition's term h (B or
    1, 2F), the short-cut nin: ``a`` on the whole short-cut, or for the down pass's ul blocks,
    whose short-cut is concat([u, ul]), split into the rows for nl(u) (``a_u``, with the bias)
    and for nl(ul) (``a_ul``); and ``s``, the spatial condition's projection (``nin_s``)."""
    conv1: object
    conv2: object
    h: tf.Tensor
    a: Optional[Dense] = None
    a_u: Optional[Dense] = None
    a_ul: Optional[tf.Tensor] = None
    s: Optional[Dense] = None


class ULInit(NamedTuple):
    """The ul stream's first layers: a down-shifted (1, 3) conv of the row above (``down``,
    ``bd``) plus a right-shifted (2, 1) conv (taps ``r_top`` on the row above, ``r_cur`` on
    the left neighbour, bias ``br``)."""
    down: tf.Tensor
    bd: tf.Tensor
    r_top: tf.Tensor
    r_cur: tf.Tensor
    br: tf.Tensor


class StridedULConv(NamedTuple):
    """The stride-2 (2, 2) down-right conv into a coarser ul level: taps on the row above,
    and taps (1, 0), (1, 1) on the current row."""
    top: tf.Tensor
    k10: tf.Tensor
    k11: tf.Tensor
    b: tf.Tensor


class Head(NamedTuple):
    """The output layer: the mixture parameters (``out``) or the energy-distance head."""
    out: Optional[Dense] = None
    ed_features: Optional[Dense] = None
    ed_noise: Optional[Dense] = None
    ed_hidden: Optional[Dense] = None
    ed_out: Optional[Dense] = None


class Level(NamedTuple):
    """One resolution's layers. The Blocks of its up pass (u and ul stream of
    ``model.up[l]``) and of its down pass (``model.down[L-1-l]``); below full resolution, the
    stride-2 conv pair from the finer level into this one (``ds_*``, ``model.downsample[l-1]``)
    and the transposed pair from this level to the finer one (``us_*``,
    ``model.upsample[L-1-l]``; ``us_ul`` as one Dense emitting a 2x2 block)."""
    up_u: list
    up_ul: list
    down_u: list
    down_ul: list
    ds_u: Optional[Conv] = None
    ds_ul: Optional[StridedULConv] = None
    us_u: Optional[Conv] = None
    us_ul: Optional[Dense] = None


class Weights(NamedTuple):
    """The first layers of both streams, the Levels (full resolution first) and the head;
    ``conds``: per level the spatial condition's features (B, H_l, W_l, Ds) of the batch
    (``PixelCNNPP._condition_features``, padded size), or None."""
    u_init: Optional[Conv]
    ul_init: ULInit
    levels: list
    head: Head
    conds: Optional[list] = None

    def ul_stream(self):
        """Only what the ul stream's per-pixel loop reads: fewer tensors into its compiled
        function (the spatial terms are added with the row above's)."""
        no_s = lambda blocks: [b._replace(s=None) for b in blocks]
        return self._replace(u_init=None, conds=None, levels=[
            lv._replace(up_u=[], down_u=[], ds_u=None, us_u=None, up_ul=no_s(lv.up_ul),
                        down_ul=no_s(lv.down_ul)) for lv in self.levels])


def _f32(v):
    return tf.cast(tf.convert_to_tensor(v), tf.float32)


def _dense_weights(layer, dtype):
    """A weight-normed dense / nin layer as a Dense, normalised in float32 and cast to
    ``dtype``."""
    V, g = _f32(layer.V), _f32(layer.g)
    w = V * (g / tf.sqrt(tf.reduce_sum(tf.square(V), 0)))
    return Dense(tf.cast(w, dtype), tf.cast(_f32(layer.b), dtype))


def dense(x, wb):
    """(..., Cin) -> (..., F)."""
    w, b = wb
    y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), w) + b
    return tf.reshape(y, x.shape[:-1] + [w.shape[-1]])


def _concat_rows(nl_name, F):
    """Rows of a nin weight on nl(concat([u, ul])) that multiply nl(u) and nl(ul), as index
    arrays (``layers.concat_rows``' ranges)."""
    return [np.concatenate([np.arange(a, b) for a, b in ranges])
            for ranges in concat_rows(nl_name, [F, F])]


def read_weights(model, h, dtype, conds=None):
    """The model's effective weights as ``Weights``: normalised in float32, then cast to
    ``dtype`` (the compute dtype). h: (B, h_dim) floats, or None; conds: the spatial
    condition's features per level, or None."""
    F, L = model.nr_filters, len(model.up)

    def c(v):
        return tf.cast(_f32(v), dtype)

    def conv(layer):
        return Conv(c(layer.kernel()), c(layer.b))

    def ul_conv(layer):
        k = c(layer.kernel())
        return ULConv(k[:1], tf.concat([k[1, 1], k[1, 0]], -1), c(layer.b))

    def strided_ul_conv(layer):
        k = c(layer.kernel())
        return StridedULConv(k[:1], k[1, 0], k[1, 1], c(layer.b))

    def transposed_ul_conv(layer):
        k = c(layer.kernel())                                 # (2, 2, F, Cin)
        # Output (2r + a, 2c + b) = x(r, c) @ k[a, b]^T: one matmul for the 2x2 block,
        # columns ordered (0,0), (0,1), (1,0), (1,1).
        mats = [tf.transpose(k[a, b]) for a in range(2) for b in range(2)]
        return Dense(tf.concat(mats, -1), tf.tile(c(layer.b), [4]))

    def block(blk, conv_fn, split_a=False):
        h_term = (tf.zeros((1, 2 * F), dtype) if h is None
                  else tf.matmul(tf.cast(h, dtype), c(blk.hw)))          # (B, 2F)
        out = Block(conv_fn(blk.conv1), conv_fn(blk.conv2), h_term,
                    s=_dense_weights(blk.nin_s, dtype) if conds is not None else None)
        if blk.nin_a is None:
            return out
        a = _dense_weights(blk.nin_a, dtype)
        if not split_a:
            return out._replace(a=a)
        iu, iul = _concat_rows(model.resnet_nonlinearity, F)   # u is known for the whole row
        return out._replace(a_u=Dense(tf.gather(a.w, iu), a.b), a_ul=tf.gather(a.w, iul))

    levels = []
    for l in range(L):
        up, down = model.up[l], model.down[L - 1 - l]
        level = Level(up_u=[block(u, conv) for u, _ in up],
                      up_ul=[block(ul, ul_conv) for _, ul in up],
                      down_u=[block(u, conv) for u, _ in down],
                      down_ul=[block(ul, ul_conv, split_a=True) for _, ul in down])
        if l > 0:
            ds_u, ds_ul = model.downsample[l - 1]
            us_u, us_ul = model.upsample[L - 1 - l]
            level = level._replace(ds_u=conv(ds_u), ds_ul=strided_ul_conv(ds_ul),
                                   us_u=conv(us_u), us_ul=transposed_ul_conv(us_ul))
        levels.append(level)

    kd, kr = c(model.ul_init_down.kernel()), c(model.ul_init_right.kernel())
    ul_init = ULInit(kd, c(model.ul_init_down.b), kr[0, 0], kr[1, 0], c(model.ul_init_right.b))
    if model.energy_distance:
        head = Head(**{n: _dense_weights(getattr(model, n), dtype)
                       for n in ("ed_features", "ed_noise", "ed_hidden", "ed_out")})
    else:
        head = Head(out=_dense_weights(model.out_nin, dtype))
    if conds is not None:
        conds = [tf.cast(cond, dtype) for cond in conds]
    return Weights(u_init=conv(model.u_init), ul_init=ul_init, levels=levels, head=head,
                   conds=conds)
