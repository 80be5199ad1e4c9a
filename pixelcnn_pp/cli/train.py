"""``train.py`` / ``pixelcnn-train``: train PixelCNN++ (or the PixelCNN baseline) with the
original's flags, on TensorFlow 2's distribution machinery.

    python train.py --data_set demo --nr_resnet 1 --nr_filters 32 --nr_gpu 1 --max_epochs 3
    python train.py --data_dir ~/data/cifar --save_dir save --nr_gpu 8     # the paper's run

One flag per ``TrainConfig`` field, with its default; the loop is pixelcnn_pp/training/.
"""

import dataclasses
import sys

from absl import flags

from pixelcnn_pp import cli
from pixelcnn_pp.cli.shared_flags import (NONLINEARITIES, define_dataclass_flags,
                                          define_fast_ops_flag)
from pixelcnn_pp.cli.progress import ProgressBar
from pixelcnn_pp.config import PRECISIONS, TrainConfig

HELP = {
    # The original's flags.
    "data_dir": "Location for the dataset",
    "save_dir": "Location for parameter checkpoints and samples",
    "data_set": "demo|cifar|imagenet|imagenet64|mnist|folder|codes, or "
                "package.module[:Class] naming your own DataLoader",
    "save_interval": "Every how many epochs to write checkpoint/samples (epoch 0 included)",
    "load_params": "Resume from the checkpoint in save_dir",
    "nr_resnet": "Number of residual blocks per stage",
    "nr_filters": "Number of filters in the model",
    "nr_logistic_mix": "Number of logistic components",
    "resnet_nonlinearity": "Nonlinearity in the gated resnets",
    "class_conditional": "Condition on the labels",
    "spatial_conditioning": "Condition on the data set's spatial maps (--data_set codes with "
                            "train_spatial / test_spatial)",
    "energy_distance": "Train with the energy distance",
    "learning_rate": "Base learning rate",
    "lr_decay": "Learning rate decay, applied every step",
    "batch_size": "Batch size per GPU (replica)",
    "init_batch_size": "Images for data-dependent init",
    "dropout_p": "Dropout rate in the gated resnets",
    "max_epochs": "How many epochs to run in total",
    "nr_gpu": "How many GPUs (replicas) to use",
    "polyak_decay": "Exponential decay of the Polyak averages",
    "num_samples": "Sample batches per save_interval",
    "seed": "Random seed",
    # Ours.
    "model": "Which network to train",
    "num_layers": "PixelCNN baseline: masked conv layers",
    "num_filters": "PixelCNN baseline: filters per layer",
    "max_steps": "Stop after this many optimiser steps in total (then evaluate and save)",
    "strategy": "Distribution strategy (multi_worker reads TF_CONFIG)",
    "precision": "Keras mixed-precision policy (likelihood and loss stay float32)",
    "jit_compile": "XLA-compile each replica's forward/backward pass and the evaluation pass",
    "recompute": "Gradient checkpointing of the gated resnets: less memory, more time",
    "sample_method": "Sampler for samples",
    "polyak_warmup": "Warm the Polyak decay up as TF's ExponentialMovingAverage with "
                     "num_updates: min(decay, (1 + t) / (10 + t)) at update t; "
                     "--nopolyak_warmup keeps the original's constant decay",
    "quiet": "Print nothing but errors",
    "strict_images": "--data_set folder: stop with a list of the unreadable or unusable image "
                     "files instead of skipping them with a warning",
    "input_mutation_rate": "Background model for likelihood ratios: replace each training "
                           "sub-pixel, with this probability, by a uniform random value, afresh "
                           "every step (evaluation unchanged; 0: off)",
    "l2_weight": "Add this weight x the sum of squared trainable weights to the differentiated "
                 "NLL (reported bits/dim stay the NLL; 0: off)",
}
CHOICES = {"model": ["pixelcnn_pp", "pixelcnn"], "resnet_nonlinearity": NONLINEARITIES,
           "strategy": ["mirrored", "multi_worker", "one_device"], "precision": PRECISIONS,
           "sample_method": ["fast", "naive"]}

F = flags.FLAGS
define_dataclass_flags(TrainConfig, HELP, CHOICES)
define_fast_ops_flag(TrainConfig.fast_ops)


def _main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}: every setting is a "
                             "--flag (see --help)")
    from pixelcnn_pp.training import train
    cfg = TrainConfig(**{f.name: F[f.name].value for f in dataclasses.fields(TrainConfig)})
    progress = None if cfg.quiet else (lambda images_per_step: ProgressBar(
        unit="steps", images_per_unit=images_per_step, stream=sys.stdout, tty_only=True))
    train(cfg, progress=progress)


def main(argv=None):
    cli.run(cli.command_name("pixelcnn-train"), _main, argv)


if __name__ == "__main__":
    main()
