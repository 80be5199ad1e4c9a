"""Faster computations of a few of the original's formulas, in one place.

The reference path through this package (``layers.py``, ``model.py``, ``optim.py``) writes the
original's formulas as plain TensorFlow ops. Each function here computes one of them faster on
a CPU. Whether an object uses them is decided once, when it is built: ``PixelCNNPP(...,
fast_ops=True)`` (which passes it to its weight-normed layers, gated resnets and dropout),
``optim.Adam(..., fused=True)``, ``optim.PolyakAverage(..., fused=True)``:

===========================  ===============================================  ===================
here                         instead of                                       used by
===========================  ===============================================  ===================
``dropout_keep``             a float uniform per element, compared with rate  ``layers.dropout``
``weight_normalize``         the automatic gradient of g * l2_normalize(V)    ``layers`` (kernels)
``fused(gate)``              x + a * sigmoid(b) as four ops (evaluation)      ``GatedResnet``
``nin.apply_parts``          nin(nl(concat([u, ul]))) on the concatenation    ``GatedResnet``
``pads_inside_convolution``  a Pad op before each shifted convolution         ``layers`` (convs)
``fused(adam_step)``,        chains of ~10 and 3 elementwise ops per weight   ``optim.Adam``,
``fused(ema_step)``                                                           ``PolyakAverage``
``freeze_gc``                (the garbage collector walking traced graphs)    the training loop
``skip_graph_optimizer``     (grappler's rewrites of every traced function)   sample.py
``reuse_freed_buffers``      (tf.data's generator turning glibc's reuse off)  the input pipeline
===========================  ===============================================  ===================

Each computes the same formula (``tests/test_fast_ops.py`` holds every one to its plain
version); the differences are float32 round-off (XLA's fused kernels, a hand-written
gradient, a matrix product summed in two parts: ``NetworkInNetwork.apply_parts`` in
``layers.py``) and, for dropout, which random numbers make the mask (the keep probability is
exactly the same). Their measured effects are in docs/PERFORMANCE.md.

Every default is False: a model, optimiser or average built without asking computes the
original's plain ops. Training asks for them (``TrainConfig.fast_ops``, ``train.py
--fast_ops``, both default True), as do ``eval.py``, ``sample.py`` and ``score.py``;
``--nofast_ops`` runs the original's ops only.
"""

import ctypes
import functools
import gc
import os

import tensorflow as tf

__all__ = ["dropout_keep", "weight_normalize", "pads_inside_convolution", "fused", "freeze_gc",
           "skip_graph_optimizer", "reuse_freed_buffers"]


# ---------------------------------------------------------------------------- dropout
def dropout_keep(shape, rate, seed):
    """A boolean keep mask, each element True with probability exactly 1 - rate, or None.

    Where rate is a multiple of 1/256 (the default 0.5 is), each element's draw is 8 random
    bits compared with rate * 256; a multiple of 1/65536: 16 bits. One 32-bit random word
    then serves 4 (or 2) elements instead of one. Otherwise None: the caller draws float
    uniforms. ``seed``: a stateless (2,) seed."""
    for bits, dtype in ((8, tf.uint8), (16, tf.uint16)):
        threshold = rate * 2 ** bits
        if threshold == int(threshold):
            per_word = 32 // bits
            n = tf.reduce_prod(shape)
            words = tf.random.stateless_uniform([(n + per_word - 1) // per_word], seed,
                                                minval=None, maxval=None, dtype=tf.uint32)
            draws = tf.reshape(tf.bitcast(words, dtype), [-1])[:n]
            return tf.reshape(draws >= tf.constant(int(threshold), dtype), shape)
    return None


# ---------------------------------------------------------------------------- weight norm
def _weight_norm_grads_fn(dW, V, g_b, axes):
    """Gradients of W = g_b * l2_normalize(V, axes) (epsilon 1e-12) for the gradient dW of W:
    (dV, dg_b). The formula TensorFlow's automatic gradient of those ops computes,
    dV = g r (dW - n sum(dW n)) with r = 1/||V||, n = V r, and dg = sum(dW n), as one
    reduction and one elementwise pass instead of ~10 passes over every kernel."""
    ss = tf.reduce_sum(tf.square(V), axes, keepdims=True)
    r = tf.math.rsqrt(tf.maximum(ss, 1e-12))
    n = V * r
    dg_b = tf.reduce_sum(dW * n, axes, keepdims=True)
    # Below epsilon the norm is the constant sqrt(1e-12), and only the direct term is left.
    dV = tf.where(ss > 1e-12, (g_b * r) * (dW - n * dg_b), (g_b * r) * dW)
    return dV, dg_b


_weight_norm_grads = tf.function(_weight_norm_grads_fn, jit_compile=True, autograph=False)


def weight_normalize(V, g, axes, g_shape):
    """g * l2_normalize(V, axes) (g reshaped to ``g_shape``): the same forward ops as the
    plain version, with the gradient computed by one XLA-fused function."""
    axes = tuple(axes)

    @tf.custom_gradient
    def wn(V, g):
        g_b = tf.reshape(g, g_shape)

        def grad(dW):
            dV, dg_b = _weight_norm_grads(tf.convert_to_tensor(dW), V, g_b, axes)
            return dV, tf.reshape(dg_b, tf.shape(g))

        return g_b * tf.nn.l2_normalize(V, axes), grad

    return wn(V, g)


# ---------------------------------------------------------------------------- padding
@functools.lru_cache(maxsize=None)
def pads_inside_convolution():
    """Whether the shifted convolutions should add their zero padding themselves (a Conv2D
    with explicit padding) rather than after a Pad op: where TensorFlow runs its own (Eigen)
    convolutions, i.e. with oneDNN off, as it is by default on CPUs without AVX-512 or AMX.
    There it saves the padded copy of every input, gives the same output bit for bit (the
    kernel's gradient to round-off: summed in another order), and both the convolution and its
    gradients are faster. oneDNN already fuses the Pad into its
    convolution, and its backward pass is slower with explicit padding: False there
    (docs/PERFORMANCE.md). Decided once per process, as TensorFlow decides oneDNN."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return not _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):   # a TensorFlow that does not say: the Pad op
        return False


# ---------------------------------------------------------------------------- XLA fusion
@functools.lru_cache(maxsize=None)
def fused(fn):
    """``fn`` (a formula of elementwise ops) compiled by XLA into one pass over memory: it
    reads each input once and writes each output once, instead of a temporary per op."""
    return tf.function(fn, jit_compile=True, autograph=False)


# ---------------------------------------------------------------------------- Python GC
def freeze_gc():
    """Move every Python object alive now out of the garbage collector's reach (gc.freeze).

    Tracing the full model's training step leaves millions of long-lived Python objects (the
    graphs' ops and tensors) that every full collection would walk again. Call it once the
    steps are traced; later garbage is collected as usual."""
    gc.collect()
    gc.freeze()


# ---------------------------------------------------------------------------- grappler
def skip_graph_optimizer():
    """Turn TensorFlow's graph optimiser (grappler) off for this process.

    Process-wide, so only a command calls it (sample.py with the fast sampler; the library
    never does). Grappler rewrites every function when it first runs: about 3 s of the full
    model's first fast-sampling call, and the sampler's rows run no faster for it
    (docs/PERFORMANCE.md). It is kept for training and evaluation, whose steps it speeds up
    a little."""
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


# ---------------------------------------------------------------------------- C allocator
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # mallopt's parameter numbers (malloc.h)
_MMAP_THRESHOLD_MAX = 32 << 20                    # glibc's ceiling on 64-bit systems


def reuse_freed_buffers():
    """Let the C allocator (glibc) reuse freed tensor buffers again, after tf.data's generator
    dataset told it not to. Returns True where it was set (glibc), False elsewhere.

    Making a ``tf.data.Dataset.from_generator`` under Python 3.11 makes TensorFlow set
    glibc's ``M_MMAP_THRESHOLD`` to 128 KiB, which also turns glibc's adaptive threshold off:
    from then on every buffer above 128 KiB, nearly every activation, is mapped afresh from
    the kernel and unmapped when freed, so each step page-faults its whole working set again
    (a 64-filter training step: about a million page faults and 1.6 s of system time per step
    on a 2-core AMD EPYC). This sets the values glibc's own adaptive rule reaches, a 32 MiB
    mmap threshold and twice that as the trim threshold, so freed buffers are reused.
    Process-wide: the pipeline of ``training.distribute_batches`` calls it whenever it has
    made an iterator (which runs the generator op that changed the setting)."""
    if not hasattr(os, "confstr") or "glibc" not in (_confstr("CS_GNU_LIBC_VERSION") or ""):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                and libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX))


def _confstr(name):
    try:
        return os.confstr(name)
    except (ValueError, OSError):
        return None
