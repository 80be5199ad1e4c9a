"""``score.py`` / ``pixelcnn-score``: score every image of a data set under a trained model:
NLL, bits/dim and, when asked, the likelihood ratio against a background model and the
input-complexity score; optionally an out-of-distribution set too, with AUROCs
(docs/SCORING.md).

    python score.py --save_dir runs/demo --out scores.csv
    python score.py --save_dir runs/demo --data_set folder --data_dir photos --out photos.csv
    python score.py --save_dir runs/demo --background_save_dir runs/demo_bg --input_complexity \\
        --ood_data_set folder --ood_data_dir other --out ood.csv --heatmaps heatmaps

The model is loaded with its Polyak-averaged weights (``--raw``: the trained ones), as
evaluation does. One CSV row per image; with --ood_* the rows of both sets, a ``set`` column
telling them apart (in / out), a line of the AUROCs with the number of images of each set
behind them, and a last line of JSON with the same. ``cli/score_files.score_to_files`` does
the work.
"""

import json

from absl import flags

from pixelcnn_pp import cli

F = flags.FLAGS
cli.define_model_flags()     # --save_dir or --tf1_checkpoint (+ model flags), --fast_ops
flags.DEFINE_boolean("raw", False, "Use the raw trained weights instead of the averages")
flags.DEFINE_string("data_set", None, "Data set to score (default: the save_dir's; cifar for "
                    "a TF1 checkpoint): demo|cifar|imagenet|imagenet64|mnist|folder|codes or "
                    "package.module[:Class]")
flags.DEFINE_string("data_dir", None, "Location of the data set (default: the save_dir's)")
flags.DEFINE_enum("subset", "test", ["test", "train"], "Which split to score")
flags.DEFINE_string("out", "scores.csv", "CSV to write, one row per image")
flags.DEFINE_boolean("overwrite", False, "Replace --out and heatmap files that exist already")
flags.DEFINE_integer("batch_size", 16, "Images per network pass")
flags.DEFINE_integer("max_images", None, "Score only the first N images of each set")
flags.DEFINE_string("background_save_dir", None, "A background model's save_dir (trained with "
                    "--input_mutation_rate): adds the likelihood ratio column llr")
flags.DEFINE_boolean("input_complexity", False, "Add the PNG input complexity and ic_score = "
                     "bits_per_dim - input_complexity")
flags.DEFINE_string("ood_data_set", None, "A second (out-of-distribution) data set to score")
flags.DEFINE_string("ood_data_dir", None, "Location of --ood_data_set")
flags.DEFINE_enum("ood_subset", "all", ["all", "test", "train"], "Which images of "
                  "--ood_data_set: all (its train split then its test split, so a folder is "
                  "scored whole; a loader serving the same images for both gives them once), "
                  "or one split")
flags.DEFINE_string("heatmaps", None, "Folder for PNGs of the first --num_heatmaps images of "
                    "each set beside their per-pixel NLL maps in bits")
flags.DEFINE_integer("num_heatmaps", 16, "How many heatmaps per set")


def _check_flags():
    cli.model_source(F)      # checks the model flags
    cli.check_at_least(F, batch_size=1, max_images=1, num_heatmaps=0)
    if (F.ood_data_dir or F["ood_subset"].present) and not F.ood_data_set:
        raise cli.UsageError("--ood_data_dir / --ood_subset need --ood_data_set")
    if F["num_heatmaps"].present and not F.heatmaps:
        raise cli.UsageError("--num_heatmaps is for --heatmaps DIR")
    if not F.out:
        raise cli.UsageError("--out must name a CSV file")


def _main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (see --help)")
    _check_flags()
    from pixelcnn_pp.cli.score_files import ScoreRequest, score_to_files
    summary, result = score_to_files(ScoreRequest(
        save_dir=F.save_dir, tf1_checkpoint=F.tf1_checkpoint, tf1_model=cli.tf1_model(F),
        use_averages=not F.raw, data_set=F.data_set, data_dir=F.data_dir, subset=F.subset,
        out=F.out, overwrite=F.overwrite, batch_size=F.batch_size, max_images=F.max_images,
        background_save_dir=F.background_save_dir, input_complexity=F.input_complexity,
        ood_data_set=F.ood_data_set, ood_data_dir=F.ood_data_dir, ood_subset=F.ood_subset,
        heatmaps=F.heatmaps, num_heatmaps=F.num_heatmaps, fast_ops=F.fast_ops))
    print(summary)
    print(json.dumps(result))


def main(argv=None, quick_exit=False):
    """The command in this process (argv: sys.argv if None); quick_exit: end the process as
    soon as its files are written (``cli.run``)."""
    cli.run(cli.command_name("pixelcnn-score"), _main, argv, quick_exit=quick_exit)


def command():
    """score.py and the ``pixelcnn-score`` console command: ``main``, the process ending at
    once."""
    main(quick_exit=True)


if __name__ == "__main__":
    command()
