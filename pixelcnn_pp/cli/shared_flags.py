"""The flags eval, sample and score name a trained model with, and shared flag checks."""

import dataclasses

from absl import flags

from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.errors import UsageError

__all__ = ["MODEL_FLAGS", "define_model_flags", "define_fast_ops_flag",
           "define_dataclass_flags", "model_source", "tf1_model", "check_at_least"]

MODEL_FLAGS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "resnet_nonlinearity",
               "num_classes", "energy_distance")
NONLINEARITIES = ["concat_elu", "elu", "relu"]


def define_dataclass_flags(cls, helps, choices=None):
    """One absl flag per field of the dataclass ``cls`` named in ``helps`` (field -> help),
    with the field's default and type; ``choices``: field -> allowed values (an enum flag)."""
    choices = choices or {}
    for f in dataclasses.fields(cls):
        if f.name not in helps:
            continue
        default, help_ = f.default, helps[f.name]
        if f.name in choices:
            flags.DEFINE_enum(f.name, default, list(choices[f.name]), help_)
        elif f.type in (bool, "bool"):
            flags.DEFINE_boolean(f.name, default, help_)
        elif f.type in (int, "int") or "Optional[int]" in str(f.type):
            flags.DEFINE_integer(f.name, default, help_)
        elif f.type in (float, "float"):
            flags.DEFINE_float(f.name, default, help_)
        else:
            flags.DEFINE_string(f.name, default, help_)


def define_model_flags():
    """``--save_dir`` (a run of train.py, which records its own configuration) or
    ``--tf1_checkpoint`` with the model flags it was trained with (ModelConfig's defaults:
    the paper's CIFAR-10 model), and ``--fast_ops``."""
    flags.DEFINE_string("save_dir", None, "a save_dir written by train.py (its config.json "
                        "says what model it holds)")
    flags.DEFINE_string("tf1_checkpoint", None, "an original TF1 checkpoint prefix (e.g. "
                        "dir/params_cifar.ckpt) or its directory; give the model flags below")
    M = ModelConfig
    flags.DEFINE_integer("nr_resnet", M.nr_resnet, "TF1 checkpoint: gated resnets per stage")
    flags.DEFINE_integer("nr_filters", M.nr_filters, "TF1 checkpoint: filters per layer")
    flags.DEFINE_integer("nr_logistic_mix", M.nr_logistic_mix,
                         "TF1 checkpoint: logistic mixture components")
    flags.DEFINE_enum("resnet_nonlinearity", M.resnet_nonlinearity, NONLINEARITIES,
                      "TF1 checkpoint: nonlinearity")
    flags.DEFINE_integer("num_classes", 0, "TF1 checkpoint: classes of a class-conditional "
                         "model (0: unconditional)")
    flags.DEFINE_bool("energy_distance", M.energy_distance,
                      "TF1 checkpoint: energy-distance head")
    define_fast_ops_flag()


def define_fast_ops_flag(default=True):
    flags.DEFINE_bool("fast_ops", default, "the faster computations of pixelcnn_pp/fast_ops.py "
                      "(the same formulas); --nofast_ops: the original's ops only")


def model_source(F, image_shape=None):
    """The keyword arguments of ``checkpoint.load_for_inference`` the flags name: the
    save_dir, or the TF1 checkpoint with ``ModelConfig.for_tf1`` of the model flags on
    ``image_shape``, and the model's fast_ops choice. The model flags go with a TF1
    checkpoint only (UsageError); the library checks that exactly one source is given."""
    if F.save_dir:
        given = [f"--{n}" for n in MODEL_FLAGS if F[n].present]
        if given:
            raise UsageError(f"{', '.join(given)}: the model flags are for --tf1_checkpoint; "
                             "a save_dir has its own config.json")
    model_config = (ModelConfig.for_tf1(image_shape, **tf1_model(F))
                    if F.tf1_checkpoint else None)
    return dict(save_dir=F.save_dir, tf1_checkpoint=F.tf1_checkpoint,
                model_config=model_config, fast_ops=F.fast_ops)


def tf1_model(F):
    """The model flags as ModelConfig arguments (what a TF1 checkpoint was trained with)."""
    return {name: F[name].value for name in MODEL_FLAGS}


def check_at_least(F, **lows):
    """UsageError for the first flag (name=lowest allowed value) below its bound."""
    for name, low in lows.items():
        v = F[name].value
        if v is not None and v < low:
            raise UsageError(f"--{name} must be an integer >= {low}; got {v}")
