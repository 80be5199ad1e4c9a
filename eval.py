"""Test bits/dim of a checkpoint on a data set's test split, with the Polyak-averaged weights.

    python eval.py --save_dir save                          # a run of ours (config from it)
    python eval.py --tf1_checkpoint params_cifar.ckpt --data_set cifar --data_dir ~/data \
        --nr_resnet 5 --nr_filters 160 --nr_logistic_mix 10  # the original's released one
"""

import os

os.environ.setdefault("PIXELCNN_QUIET_TF", "1")  # TensorFlow's start-up log lines off: cli.py

import json  # noqa: E402

from absl import flags  # noqa: E402

from pixelcnn_pp import cli  # noqa: E402
from pixelcnn_pp.evaluation import evaluate_checkpoint  # noqa: E402

F = flags.FLAGS
flags.DEFINE_string("save_dir", None, "A save_dir written by train.py")
flags.DEFINE_string("tf1_checkpoint", None, "An original TF1 checkpoint prefix instead")
flags.DEFINE_string("data_set", None, "Data set (default: the save_dir's; cifar for TF1)")
flags.DEFINE_string("data_dir", None, "Location of the data set (default: the save_dir's)")
flags.DEFINE_integer("batch_size", 16, "Evaluation batch size")
flags.DEFINE_integer("nr_resnet", 5, "TF1 checkpoint: residual blocks per stage")
flags.DEFINE_integer("nr_filters", 160, "TF1 checkpoint: filters")
flags.DEFINE_integer("nr_logistic_mix", 10, "TF1 checkpoint: logistic components")
flags.DEFINE_enum("resnet_nonlinearity", "concat_elu", ["concat_elu", "elu", "relu"],
                  "TF1 checkpoint: nonlinearity")
flags.DEFINE_integer("num_classes", 0, "TF1 checkpoint: classes of a class-conditional model "
                     "(0: unconditional)")
flags.DEFINE_bool("energy_distance", False, "TF1 checkpoint: energy-distance head")
flags.DEFINE_boolean("raw", False, "Use the raw trained weights instead of the averages")
flags.DEFINE_integer("max_batches", None, "Evaluate only this many batches")


_MODEL_FLAGS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "resnet_nonlinearity",
                "num_classes", "energy_distance")


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (see eval.py --help)")
    if not F.save_dir and not F.tf1_checkpoint:
        raise cli.UsageError("give --save_dir (a run of train.py) or --tf1_checkpoint")
    if F.save_dir and F.tf1_checkpoint:
        raise cli.UsageError("give --save_dir or --tf1_checkpoint, not both")
    given = [f"--{n}" for n in _MODEL_FLAGS if F[n].present]
    if F.save_dir and given:
        raise cli.UsageError(f"{', '.join(given)}: the model flags are for --tf1_checkpoint; a "
                             "save_dir has its own config.json")
    if F.batch_size < 1:
        raise cli.UsageError(f"--batch_size must be an integer >= 1; got {F.batch_size}")
    result = evaluate_checkpoint(
        save_dir=F.save_dir, tf1_checkpoint=F.tf1_checkpoint, data_set=F.data_set,
        data_dir=F.data_dir, batch_size=F.batch_size, use_averages=not F.raw,
        tf1_model=dict(nr_resnet=F.nr_resnet, nr_filters=F.nr_filters,
                       nr_logistic_mix=F.nr_logistic_mix,
                       resnet_nonlinearity=F.resnet_nonlinearity,
                       num_classes=F.num_classes or None, energy_distance=F.energy_distance),
        max_batches=F.max_batches)
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run("eval.py", main)
