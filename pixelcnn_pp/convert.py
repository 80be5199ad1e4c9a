"""Conversion between our model and the original's TF1 variables.

The original names every variable ``model/<kind>_<n>/<V|g|b>``: a weight-normed layer's kind
is ``conv2d``, ``deconv2d`` or ``dense`` (the nin layers), and n counts the layers of that
kind in the order the original creates them, which is the forward order our model lists them
in (``model.weight_norm_layers()``). A conditional model's gated resnets hold
``model/conditional_weights_<n>/hw``, n counting the blocks (docs/ORIGINAL.md §2). The names
are made here, from that order; the layers themselves carry none. The original's checkpoints
also hold Polyak averages as ``<name>/ExponentialMovingAverage``, and Adam slots under
meaningless names (``Variable_12``), which are ignored here.
"""

import collections
import os

import numpy as np
import tensorflow as tf

from pixelcnn_pp import layers as L
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["tf1_variables", "assign_tf1_variables", "export_tf1_variables",
           "load_tf1_checkpoint", "read_tf1_checkpoint", "EMA_SUFFIX"]

EMA_SUFFIX = "/ExponentialMovingAverage"


def _kind(layer):
    """The original's name for the kind of a weight-normed layer."""
    if isinstance(layer, L.WNDeconv2D):
        return "deconv2d"
    if isinstance(layer, L.WNConv2D):
        return "conv2d"
    assert isinstance(layer, L.WNDense), type(layer)    # NetworkInNetwork too
    return "dense"


def tf1_variables(model):
    """{original variable name ("model/conv2d_0/V", ...): variable} of a PixelCNNPP whose
    weights exist (called once on a batch, or initialised)."""
    if not model.built_weights():
        raise InvalidInputError("the model has no weights yet: call it once on a batch of the "
                                "right shape (e.g. model(x)) before assigning or exporting "
                                "variables")
    counts, out = collections.Counter(), {}
    for layer in model.weight_norm_layers():
        kind = _kind(layer)
        for v in ("V", "g", "b"):
            out[f"model/{kind}_{counts[kind]}/{v}"] = getattr(layer, v)
        counts[kind] += 1
    for n, blk in enumerate(model.blocks()):
        if blk.h_dim:
            out[f"model/conditional_weights_{n}/hw"] = blk.hw
    return out


def assign_tf1_variables(model, arrays):
    """Set the model's weights from ``{"model/conv2d_0/V": array, ...}``.

    The model must be built (called once on a batch of the intended shape). Every model
    variable must be present with its exact shape, and nothing else may be: otherwise one
    ValueError lists the missing, unexpected and mis-shaped names, and nothing is assigned.
    """
    variables = tf1_variables(model)
    missing = sorted(set(variables) - set(arrays))
    unexpected = sorted(set(arrays) - set(variables))
    misshaped = sorted(
        f"{n}: checkpoint {tuple(np.shape(arrays[n]))} vs model {tuple(variables[n].shape)}"
        for n in set(variables) & set(arrays)
        if tuple(np.shape(arrays[n])) != tuple(variables[n].shape))
    if missing or unexpected or misshaped:
        parts = []
        for title, names in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped", misshaped)):
            if names:
                more = [f"... and {len(names) - 12} more"] if len(names) > 12 else []
                shown = names[:12] + more
                parts.append(f"{len(names)} {title}:\n    " + "\n    ".join(shown))
        raise InvalidInputError(
            "the variables do not match this model (check nr_resnet, nr_filters, "
            "nr_logistic_mix, num_classes, energy_distance and the image channels):\n  "
            + "\n  ".join(parts))
    for name, var in variables.items():
        var.assign(np.asarray(arrays[name], dtype=var.dtype))


def export_tf1_variables(model):
    """The model's weights as ``{original name: float32 numpy array}``."""
    return {n: np.asarray(tf.convert_to_tensor(v)) for n, v in tf1_variables(model).items()}


def read_tf1_checkpoint(path, use_ema=True):
    """Read the model variables of an original TF1 checkpoint as ``{name: array}``.

    path: the checkpoint prefix (``dir/params_cifar.ckpt``) or its directory.
    use_ema: take the Polyak averages (``<name>/ExponentialMovingAverage``), as the original
    evaluated and sampled with; False takes the raw trained values.
    """
    if os.path.isdir(path):
        found = tf.train.latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no TF1 checkpoint in directory {path!r}: pass the "
                                    "prefix, e.g. dir/params_cifar.ckpt")
        path = found
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(
            f"no TF1 checkpoint at {path!r}: expected {path}.index and {path}.data-*; pass the "
            "prefix (e.g. dir/params_cifar.ckpt), not one of its files")
    reader = tf.train.load_checkpoint(path)
    names = reader.get_variable_to_shape_map()
    out = {}
    for name in names:
        if not name.startswith("model/") or name.endswith(EMA_SUFFIX):
            continue
        key = name + EMA_SUFFIX if use_ema else name
        if key not in names:
            raise InvalidInputError(f"checkpoint {path!r} has {name} but no {key}; load it with "
                                    "use_ema=False to take the raw values")
        out[name] = reader.get_tensor(key)
    if not out:
        raise InvalidInputError(f"checkpoint {path!r} holds no 'model/...' variables: is it a "
                                "PixelCNN++ checkpoint of the original code?")
    return out


def load_tf1_checkpoint(model, path, use_ema=True):
    """Load an original TF1 checkpoint (e.g. the released ``params_cifar.ckpt``) into ``model``.

    The model must be built with the checkpoint's configuration (the released CIFAR-10 one:
    nr_resnet=5, nr_filters=160, nr_logistic_mix=10) and called once. By default the Polyak
    averages are loaded, as the original evaluated; ``use_ema=False`` loads the raw values.
    """
    assign_tf1_variables(model, read_tf1_checkpoint(path, use_ema=use_ema))
