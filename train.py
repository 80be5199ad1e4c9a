"""Train PixelCNN++ (or the PixelCNN baseline): the original's flags, on TF2 distribution.

    python train.py --data_set demo --nr_resnet 1 --nr_filters 32 --nr_gpu 1 --max_epochs 3
    python train.py --data_dir ~/data/cifar --save_dir save --nr_gpu 8     # the paper's run

Flags are parsed here only; the loop lives in pixelcnn_pp/training.py.
"""

import os

os.environ.setdefault("PIXELCNN_QUIET_TF", "1")  # TensorFlow's start-up log lines off: cli.py

import dataclasses  # noqa: E402

from absl import flags  # noqa: E402

from pixelcnn_pp import cli  # noqa: E402
from pixelcnn_pp.training import PRECISIONS, TrainConfig, train  # noqa: E402

_D = TrainConfig()
F = flags.FLAGS
# The original's flags, names and defaults.
flags.DEFINE_string("data_dir", _D.data_dir, "Location for the dataset")
flags.DEFINE_string("save_dir", _D.save_dir, "Location for parameter checkpoints and samples")
flags.DEFINE_string("data_set", _D.data_set,
                    "demo|cifar|imagenet|imagenet64|mnist|folder, or package.module[:Class] "
                    "naming your own DataLoader")
flags.DEFINE_integer("save_interval", _D.save_interval,
                     "Every how many epochs to write checkpoint/samples (epoch 0 included)")
flags.DEFINE_boolean("load_params", _D.load_params, "Resume from the checkpoint in save_dir")
flags.DEFINE_integer("nr_resnet", _D.nr_resnet, "Number of residual blocks per stage")
flags.DEFINE_integer("nr_filters", _D.nr_filters, "Number of filters in the model")
flags.DEFINE_integer("nr_logistic_mix", _D.nr_logistic_mix, "Number of logistic components")
flags.DEFINE_enum("resnet_nonlinearity", _D.resnet_nonlinearity, ["concat_elu", "elu", "relu"],
                  "Nonlinearity in the gated resnets")
flags.DEFINE_boolean("class_conditional", _D.class_conditional, "Condition on the labels")
flags.DEFINE_boolean("energy_distance", _D.energy_distance, "Train with the energy distance")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Base learning rate")
flags.DEFINE_float("lr_decay", _D.lr_decay, "Learning rate decay, applied every step")
flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size per GPU (replica)")
flags.DEFINE_integer("init_batch_size", _D.init_batch_size, "Images for data-dependent init")
flags.DEFINE_float("dropout_p", _D.dropout_p, "Dropout rate in the gated resnets")
flags.DEFINE_integer("max_epochs", _D.max_epochs, "How many epochs to run in total")
flags.DEFINE_integer("nr_gpu", _D.nr_gpu, "How many GPUs (replicas) to use")
flags.DEFINE_float("polyak_decay", _D.polyak_decay, "Exponential decay of the Polyak averages")
flags.DEFINE_integer("num_samples", _D.num_samples, "Sample batches per save_interval")
flags.DEFINE_integer("seed", _D.seed, "Random seed")
# Ours.
flags.DEFINE_enum("model", _D.model, ["pixelcnn_pp", "pixelcnn"], "Which network to train")
flags.DEFINE_integer("num_layers", _D.num_layers, "PixelCNN baseline: masked conv layers")
flags.DEFINE_integer("num_filters", _D.num_filters, "PixelCNN baseline: filters per layer")
flags.DEFINE_integer("max_steps", None, "Stop after this many optimiser steps in total "
                     "(then evaluate and save)")
flags.DEFINE_enum("strategy", _D.strategy, ["mirrored", "multi_worker", "one_device"],
                  "Distribution strategy (multi_worker reads TF_CONFIG)")
flags.DEFINE_enum("precision", _D.precision, list(PRECISIONS),
                  "Keras mixed-precision policy (likelihood and loss stay float32)")
flags.DEFINE_boolean("jit_compile", _D.jit_compile,
                     "XLA-compile each replica's forward/backward pass and the evaluation pass")
flags.DEFINE_boolean("recompute", _D.recompute,
                     "Gradient checkpointing of the gated resnets: less memory, more time")
flags.DEFINE_enum("sample_method", _D.sample_method, ["fast", "naive"], "Sampler for samples")
flags.DEFINE_boolean("polyak_warmup", _D.polyak_warmup,
                     "Warm the Polyak decay up as TF's ExponentialMovingAverage with num_updates: "
                     "min(decay, (1 + t) / (10 + t)) at update t; --nopolyak_warmup keeps the "
                     "original's constant decay")
cli.define_fast_ops_flag(_D.fast_ops)
flags.DEFINE_boolean("quiet", _D.quiet, "Print nothing but errors")
flags.DEFINE_boolean("strict_images", _D.strict_images,
                     "--data_set folder: stop with a list of the unreadable or unusable image "
                     "files instead of skipping them with a warning")
flags.DEFINE_float("input_mutation_rate", _D.input_mutation_rate,
                   "Background model for likelihood ratios: replace each training sub-pixel, "
                   "with this probability, by a uniform random value, afresh every step "
                   "(evaluation unchanged; 0: off)")
flags.DEFINE_float("l2_weight", _D.l2_weight,
                   "Add this weight x the sum of squared trainable weights to the differentiated "
                   "NLL (reported bits/dim stay the NLL; 0: off)")


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a "
                             "--flag (see train.py --help)")
    cfg = TrainConfig(**{f.name: F[f.name].value for f in dataclasses.fields(TrainConfig)})
    train(cfg)


if __name__ == "__main__":
    cli.run("train.py", main)
