"""``sample.py`` / ``pixelcnn-sample``: draw images from a trained PixelCNN++ and write them
as a PNG grid and an .npz.

    python sample.py --save_dir=runs/cifar --num_samples=16 --out=samples.png
    python sample.py --tf1_checkpoint=params_cifar.ckpt --nr_resnet=5 --nr_filters=160 \\
        --nr_logistic_mix=10 --num_samples=16 --out=samples.png
    python sample.py --save_dir=runs/cifar --complete=images.npz --given_rows=16 \\
        --num_samples=4 --out=completions.png     # keep the top rows, draw the rest

The model is loaded by ``checkpoint.load_for_inference`` with its Polyak-averaged weights,
the images are drawn and written by ``cli/sample_files.sample_to_files``
(``completion.complete_to_files`` for --complete). See docs/SAMPLING.md.
"""

from absl import flags

from pixelcnn_pp import cli
from pixelcnn_pp.config import PRECISIONS

F = flags.FLAGS
cli.define_model_flags()     # --save_dir or --tf1_checkpoint (+ model flags), --fast_ops
flags.DEFINE_integer("num_samples", 16, "number of images")
flags.DEFINE_integer("batch_size", 16, "images sampled together")
flags.DEFINE_list("labels", None, "class-conditional models: class indices (repeated to "
                  "num_samples), or 'cycle' (image n gets class n mod K, the default)")
flags.DEFINE_integer("seed", 0, "random seed: the same seed gives the same images")
flags.DEFINE_enum("method", "fast", ["fast", "naive"],
                  "fast: cached, exact; naive: one full network pass per pixel (the original)")
flags.DEFINE_enum("xla", "auto", ["auto", "on", "off"], "compile the sampler's rows with XLA")
flags.DEFINE_enum("precision", "float32", list(PRECISIONS),
                  "Keras mixed-precision policy of the model: both samplers compute in it "
                  "(weights normalised in float32; pixels and their sampling in float32)")
flags.DEFINE_string("out", "samples.png", "PNG grid to write (first 100 images); the .npz "
                    "of all images (uint8) goes beside it")
flags.DEFINE_boolean("overwrite", False, "replace --out and its .npz if they exist already")
flags.DEFINE_list("image_shape", None, "H,W,C to sample (default: the save_dir's training "
                  "shape, or 32,32,3 for a TF1 checkpoint; H,W for code maps); any H, W >= 1")
flags.DEFINE_string("complete", None, "complete images instead of sampling new ones: an .npz "
                    "of uint8 images, one image file or a folder of them, already of the "
                    "model's H,W,C; writes a grid (original, kept part, --num_samples "
                    "completions per image) and the .npz of all completions")
flags.DEFINE_integer("given_rows", None, "--complete: top rows kept (default: half)")
flags.DEFINE_float("temperature", 1.0, "divides the logits of a prior over codes; for images, "
                   "divides the mixture weights' logits and scales each logistic by it "
                   "(< 1: closer to the likeliest values)")
flags.DEFINE_boolean("keep_traces", True, "with --save_dir and the fast sampler: keep its "
                     "traced functions in SAVE_DIR/traces and load them in later runs (a "
                     "shorter start; rebuilt whenever the sizes or this code change)")
flags.DEFINE_string("spatial", None, "a model with a spatial condition: an .npz whose "
                    "'spatial' array (N, Hs, Ws, D) holds one map per sample (default: the "
                    "test split's maps of the data set the save_dir was trained on)")


def _image_shape():
    if not F.image_shape:
        return None
    try:
        shape = tuple(int(s) for s in F.image_shape)
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise cli.UsageError(f"--image_shape must be H,W,C (H,W for code maps); got "
                             f"{','.join(F.image_shape)}")
    return shape


def _refuse_existing(out):
    """UsageError if --out or the .npz beside it exists (unless --overwrite): samples a user
    has are never replaced unasked."""
    import os
    there = [p for p in (out, out[:-4] + ".npz") if os.path.exists(p)]
    if there and not F.overwrite:
        raise cli.UsageError(f"{' and '.join(there)} exist(s) already: choose another --out, "
                             "or pass --overwrite to replace them")


def _spatial_maps(config, n):
    """n spatial maps for a model with a spatial condition: --spatial's, or the test split's
    of the save_dir's data set (cycled); None for other models."""
    import numpy as np
    if not config.spatial_channels:
        if F.spatial:
            raise cli.UsageError("--spatial: this model takes no spatial map")
        return None
    if F.spatial:
        try:
            with np.load(F.spatial) as f:
                maps = f["spatial"]
        except (OSError, KeyError, ValueError) as e:
            raise cli.UsageError(f"--spatial {F.spatial}: not an .npz with a 'spatial' array "
                                 f"({e})") from e
        what = F.spatial
    else:
        from pixelcnn_pp import checkpoint
        from pixelcnn_pp.data import make_loader
        if not F.save_dir:
            raise cli.UsageError("give --spatial: the maps to condition on")
        data_set, data_dir = checkpoint.data_source(F.save_dir)
        maps = make_loader(data_set, data_dir, "test", 1, return_spatial=True).spatial
        what = f"the test split of {data_set!r} ({data_dir})"
    print(f"conditioning on {min(n, len(maps))} spatial map(s) of {what}")
    return np.asarray(maps, np.float32)[np.arange(n) % len(maps)]


def _main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
    shape = _image_shape()
    source = cli.model_source(F, shape)      # checks the model flags
    if F.given_rows is not None and not F.complete:
        raise cli.UsageError("--given_rows is for --complete (the images to complete)")
    if not F.temperature > 0 or F.temperature == float("inf"):
        raise cli.UsageError(f"--temperature must be a number > 0; got {F.temperature}")
    if not F.out.lower().endswith(".png"):
        raise cli.UsageError(f"--out must name a .png file (the .npz goes beside it); got "
                             f"{F.out!r}")
    _refuse_existing(F.out)
    if F.precision != "float32":
        import keras
        keras.mixed_precision.set_global_policy(F.precision)  # before the model is built
    if F.method == "fast":
        from pixelcnn_pp import fast_ops
        fast_ops.skip_graph_optimizer()   # ~3 s less before the first image (process-wide)
    from pixelcnn_pp import checkpoint
    from pixelcnn_pp.cli import sample_files
    model, config = checkpoint.load_for_inference(**source, use_averages=True)
    if F.keep_traces and F.save_dir and F.method == "fast":
        import os
        from pixelcnn_pp import sampling
        try:
            sampling.keep_traces(model, os.path.join(F.save_dir, "traces"))
        except OSError as e:    # a read-only save_dir: sample, only slower to start
            print(f"not keeping the sampler's traces in {F.save_dir}: {e}")
    shape = shape or config.image_shape
    labels = "cycle" if F.labels == ["cycle"] else F.labels
    jit = {"auto": None, "on": True, "off": False}[F.xla]
    bar = cli.ProgressBar(unit="rows", images_per_unit=F.batch_size / shape[0])
    if F.complete:
        from pixelcnn_pp import completion
        done, _ = completion.complete_to_files(
            model, F.out, F.complete, F.num_samples, F.batch_size, shape,
            given_rows=F.given_rows, labels=labels, seed=F.seed, method=F.method,
            jit_compile=jit, progress=bar)
        print(f"wrote {F.out} and {F.out[:-4]}.npz: {done.shape[1]} completions of "
              f"each of {len(done)} images {shape[0]}x{shape[1]}x{shape[2]}")
        return
    images, _ = sample_files.sample_to_files(
        model, F.out, F.num_samples, F.batch_size, shape, labels=labels, seed=F.seed,
        method=F.method, jit_compile=jit, progress=bar,
        spatial=_spatial_maps(config, F.num_samples), temperature=F.temperature)
    what = "code maps" if config.num_categories else "images"
    print(f"wrote {F.out} and {F.out[:-4]}.npz: {len(images)} {what} "
          f"{'x'.join(str(s) for s in shape)}")


def main(argv=None, quick_exit=False):
    """The command in this process (argv: sys.argv if None); quick_exit: end the process as
    soon as its files are written (``cli.run``)."""
    cli.run(cli.command_name("pixelcnn-sample"), _main, argv, quick_exit=quick_exit)


def command():
    """sample.py and the ``pixelcnn-sample`` console command: ``main``, the process ending at
    once."""
    main(quick_exit=True)


if __name__ == "__main__":
    command()
