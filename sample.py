"""Draw images from a trained PixelCNN++ and write them as a PNG grid and an .npz.

    python sample.py --save_dir=runs/cifar --num_samples=16 --out=samples.png
    python sample.py --tf1_checkpoint=params_cifar.ckpt --nr_resnet=5 --nr_filters=160 \\
        --nr_logistic_mix=10 --num_samples=16 --out=samples.png
    python sample.py --save_dir=runs/cifar --complete=images.npz --given_rows=16 \\
        --num_samples=4 --out=completions.png     # keep the top rows, draw the rest

The model, its Polyak-averaged weights and the sampling loop come from
``pixelcnn_pp.sampling``; this file only parses flags. See docs/SAMPLING.md.
"""

import os

os.environ.setdefault("PIXELCNN_QUIET_TF", "1")  # TensorFlow's start-up log lines off: cli.py

import sys  # noqa: E402,F401

from absl import app, flags  # noqa: E402

from pixelcnn_pp import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("save_dir", None, "a save_dir written by train.py (config read from it)")
flags.DEFINE_string("tf1_checkpoint", None,
                    "an original TF1 checkpoint prefix (e.g. dir/params_cifar.ckpt) or its "
                    "directory; give the model flags below")
flags.DEFINE_integer("num_samples", 16, "number of images")
flags.DEFINE_integer("batch_size", 16, "images sampled together")
flags.DEFINE_list("labels", None, "class-conditional models: class indices (repeated to "
                  "num_samples), or 'cycle' (image n gets class n mod K, the default)")
flags.DEFINE_integer("seed", 0, "random seed: the same seed gives the same images")
flags.DEFINE_enum("method", "fast", ["fast", "naive"],
                  "fast: cached, exact; naive: one full network pass per pixel (the original)")
flags.DEFINE_enum("xla", "auto", ["auto", "on", "off"], "compile the per-pixel loop with XLA")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras mixed-precision policy of the model: both samplers compute in it "
                  "(weights normalised in float32; pixels and their sampling in float32)")
flags.DEFINE_string("out", "samples.png", "PNG grid to write (first 100 images); the .npz "
                    "of all images (uint8) goes beside it")
flags.DEFINE_list("image_shape", None, "H,W,C to sample (default: the save_dir's training "
                  "shape, or 32,32,3 for a TF1 checkpoint); H and W multiples of 4")
flags.DEFINE_string("complete", None, "complete images instead of sampling new ones: an .npz "
                    "of uint8 images, one image file or a folder of them, already of the "
                    "model's H,W,C; writes a grid (original, kept part, --num_samples "
                    "completions per image) and the .npz of all completions")
flags.DEFINE_integer("given_rows", None, "--complete: top rows kept (default: half)")
# Model flags, for --tf1_checkpoint only (a save_dir records its own configuration).
flags.DEFINE_integer("nr_resnet", 5, "TF1 checkpoint: gated resnets per stage")
flags.DEFINE_integer("nr_filters", 160, "TF1 checkpoint: filters per layer")
flags.DEFINE_integer("nr_logistic_mix", 10, "TF1 checkpoint: logistic mixture components")
flags.DEFINE_enum("resnet_nonlinearity", "concat_elu", ["concat_elu", "elu", "relu"],
                  "TF1 checkpoint: nonlinearity")
flags.DEFINE_integer("num_classes", 0, "TF1 checkpoint: classes of a class-conditional model "
                     "(0: unconditional)")
flags.DEFINE_bool("energy_distance", False, "TF1 checkpoint: energy-distance head")

_MODEL_FLAGS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "resnet_nonlinearity",
                "num_classes", "energy_distance")


def main(argv):
    _main(argv)   # a user's mistake ends in one line: cli.run


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from pixelcnn_pp import sampling
    from pixelcnn_pp.config import ModelConfig

    if FLAGS.save_dir and FLAGS.tf1_checkpoint:
        raise app.UsageError("give --save_dir or --tf1_checkpoint, not both")
    if not FLAGS.save_dir and not FLAGS.tf1_checkpoint:
        raise app.UsageError("give --save_dir (a run of train.py) or --tf1_checkpoint")
    shape = None
    if FLAGS.image_shape:
        try:
            shape = tuple(int(s) for s in FLAGS.image_shape)
        except ValueError:
            raise app.UsageError(f"--image_shape must be H,W,C; got {FLAGS.image_shape}")
        if len(shape) != 3:
            raise app.UsageError(f"--image_shape must be H,W,C; got {FLAGS.image_shape}")
    config = None
    if FLAGS.save_dir:
        given = [f"--{n}" for n in _MODEL_FLAGS if FLAGS[n].present]
        if given:
            raise app.UsageError(f"{', '.join(given)}: the model flags are for "
                                 "--tf1_checkpoint; a save_dir has its own config.json")
    else:
        config = ModelConfig(
            image_shape=shape or (32, 32, 3), nr_resnet=FLAGS.nr_resnet,
            nr_filters=FLAGS.nr_filters, nr_logistic_mix=FLAGS.nr_logistic_mix,
            resnet_nonlinearity=FLAGS.resnet_nonlinearity, dropout_p=0.0,
            num_classes=FLAGS.num_classes or None, energy_distance=FLAGS.energy_distance)
    if FLAGS.precision != "float32":
        import keras
        keras.mixed_precision.set_global_policy(FLAGS.precision)  # before the model is built
    model, config = sampling.load_model_for_sampling(FLAGS.save_dir, FLAGS.tf1_checkpoint,
                                                     config)
    shape = shape or config.image_shape
    labels = FLAGS.labels
    if labels == ["cycle"]:
        labels = "cycle"
    jit = {"auto": None, "on": True, "off": False}[FLAGS.xla]
    bar = sampling.ProgressBar(FLAGS.batch_size, shape[0])
    if FLAGS.given_rows is not None and not FLAGS.complete:
        raise app.UsageError("--given_rows is for --complete (the images to complete)")
    if FLAGS.complete:
        from pixelcnn_pp import completion
        done, _ = completion.complete_to_files(
            model, FLAGS.out, FLAGS.complete, FLAGS.num_samples, FLAGS.batch_size, shape,
            given_rows=FLAGS.given_rows, labels=labels, seed=FLAGS.seed, method=FLAGS.method,
            jit_compile=jit, progress=bar)
        print(f"wrote {FLAGS.out} and {FLAGS.out[:-4]}.npz: {done.shape[1]} completions of "
              f"each of {len(done)} images {shape[0]}x{shape[1]}x{shape[2]}")
        return
    images, _ = sampling.sample_to_files(
        model, FLAGS.out, FLAGS.num_samples, FLAGS.batch_size, shape, labels=labels,
        seed=FLAGS.seed, method=FLAGS.method, jit_compile=jit, progress=bar)
    print(f"wrote {FLAGS.out} and {FLAGS.out[:-4]}.npz: {len(images)} images "
          f"{shape[0]}x{shape[1]}x{shape[2]}")


if __name__ == "__main__":
    cli.run("sample.py", main)
