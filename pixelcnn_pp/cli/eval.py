"""``eval.py`` / ``pixelcnn-eval``: test bits/dim of a checkpoint on a data set's test split,
with the Polyak-averaged weights.

    python eval.py --save_dir save                          # a run of ours (config from it)
    python eval.py --tf1_checkpoint params_cifar.ckpt --data_set cifar --data_dir ~/data \\
        --nr_resnet 5 --nr_filters 160 --nr_logistic_mix 10  # the original's released one

Prints one JSON line: {"test_bpd", "images", "data_set"}.
"""

import json

from absl import flags

from pixelcnn_pp import cli
from pixelcnn_pp.cli.shared_flags import check_at_least, define_model_flags, model_source, tf1_model

F = flags.FLAGS
define_model_flags()     # --save_dir or --tf1_checkpoint (+ model flags), --fast_ops
flags.DEFINE_string("data_set", None, "Data set (default: the save_dir's; cifar for TF1)")
flags.DEFINE_string("data_dir", None, "Location of the data set (default: the save_dir's)")
flags.DEFINE_integer("batch_size", 16, "Evaluation batch size")
flags.DEFINE_boolean("raw", False, "Use the raw trained weights instead of the averages")
flags.DEFINE_integer("max_batches", None, "Evaluate only this many batches")


def _main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (see --help)")
    model_source(F)          # checks the model flags
    check_at_least(F, batch_size=1, max_batches=1)
    from pixelcnn_pp.evaluation import evaluate_checkpoint
    print(json.dumps(evaluate_checkpoint(
        save_dir=F.save_dir, tf1_checkpoint=F.tf1_checkpoint, tf1_model=tf1_model(F),
        data_set=F.data_set, data_dir=F.data_dir, batch_size=F.batch_size,
        use_averages=not F.raw, max_batches=F.max_batches, fast_ops=F.fast_ops)))


def main(argv=None, quick_exit=False):
    """The command in this process (argv: sys.argv if None); quick_exit: end the process as
    soon as its files are written (``cli.run``)."""
    cli.run(cli.command_name("pixelcnn-eval"), _main, argv, quick_exit=quick_exit)


def command():
    """eval.py and the ``pixelcnn-eval`` console command: ``main``, the process ending at
    once."""
    main(quick_exit=True)


if __name__ == "__main__":
    command()
