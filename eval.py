"""Test bits/dim of a checkpoint on a data set's test split, with the Polyak-averaged weights.

    python eval.py --save_dir save                          # a run of ours (config from it)
    python eval.py --tf1_checkpoint params_cifar.ckpt --data_set cifar --data_dir ~/data \
        --nr_resnet 5 --nr_filters 160 --nr_logistic_mix 10  # the original's released one

This file parses flags; ``pixelcnn_pp.evaluation.evaluate_checkpoint`` does the rest.
"""

import os

os.environ.setdefault("PIXELCNN_QUIET_TF", "1")  # TensorFlow's start-up log lines off: cli.py

import json  # noqa: E402

from absl import flags  # noqa: E402

from pixelcnn_pp import cli  # noqa: E402

F = flags.FLAGS
cli.define_model_flags()     # --save_dir or --tf1_checkpoint (+ model flags), --fast_ops
flags.DEFINE_string("data_set", None, "Data set (default: the save_dir's; cifar for TF1)")
flags.DEFINE_string("data_dir", None, "Location of the data set (default: the save_dir's)")
flags.DEFINE_integer("batch_size", 16, "Evaluation batch size")
flags.DEFINE_boolean("raw", False, "Use the raw trained weights instead of the averages")
flags.DEFINE_integer("max_batches", None, "Evaluate only this many batches")


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (see eval.py --help)")
    cli.model_source(F)      # checks the model flags; sets the fast_ops switch
    cli.check_at_least(F, batch_size=1, max_batches=1)
    from pixelcnn_pp.evaluation import evaluate_checkpoint
    print(json.dumps(evaluate_checkpoint(
        save_dir=F.save_dir, tf1_checkpoint=F.tf1_checkpoint, data_set=F.data_set,
        data_dir=F.data_dir, batch_size=F.batch_size, use_averages=not F.raw,
        tf1_model=cli.tf1_model(F), max_batches=F.max_batches)))


if __name__ == "__main__":
    cli.run("eval.py", main)
