"""What every entry point (train.py, eval.py, sample.py, score.py) shares: how a user's mistake
is reported, the flags naming a trained model, and the progress bar.

    import os
    os.environ.setdefault("PIXELCNN_QUIET_TF", "1")   # first line: TensorFlow's start-up logs off
    from pixelcnn_pp import cli
    ...
    if __name__ == "__main__":
        cli.run("train.py", main)          # instead of absl's app.run(main)

A mistake the user can fix ends the program with one line on stderr,
``NAME.py: error: <message>``, and no traceback: exit status 2 for a usage error (bad flags,
``cli.UsageError``, absl's ``app.UsageError``), 1 for a run that failed (``cli.RunError``, any
other ``cli.UserError``, and an ``OSError``: missing or damaged data, files and checkpoints, a
full disk, no permission). A ``ValueError`` is the user's when this project raised it (its
argument checks say what to do); one raised inside a library (NumPy, TensorFlow, Keras) is
an internal error. Anything else is an internal error and keeps its traceback. ``--verbose``
or ``PIXELCNN_TRACEBACK=1`` shows the traceback of a user error too. Chained exceptions
(``raise ... from e``) are not printed: the message says what to do.

TensorFlow's C++ start-up lines (``I0000 ... port.cc:153] oneDNN custom operations are on``,
``failed call to cuInit``, ...) would spoil the one line: with ``PIXELCNN_QUIET_TF=1`` in the
environment before ``pixelcnn_pp`` is imported, the package sets ``TF_CPP_MIN_LOG_LEVEL=3``
(unless it is set already) and drops those lines while TensorFlow is imported (see
``quiet_tensorflow_import``); Python warnings and every other line go through. ``--verbose``
on the command line or ``PIXELCNN_QUIET_TF=0`` keeps TensorFlow's lines.
"""

import os
import re
import sys

from absl import app, flags

__all__ = ["UserError", "UsageError", "RunError", "USER_ERRORS", "run", "error_line",
           "is_user_error", "quiet_tensorflow_import", "MODEL_FLAGS", "define_model_flags",
           "define_fast_ops_flag", "model_source", "tf1_model", "check_at_least", "ProgressBar"]

EXIT_FAILED, EXIT_USAGE = 1, 2
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where this project's code lives: the entry points, pixelcnn_pp/ and data/.
_OURS = {_PROJECT, os.path.join(_PROJECT, "pixelcnn_pp"), os.path.join(_PROJECT, "data")}


class UserError(Exception):
    """Base of the library's errors whose message is written for the user (what went wrong,
    which file or flag, what to do). Entry points print it as one line."""


class UsageError(UserError, ValueError):
    """The flags (or arguments) make no sense: exit status 2."""


class RunError(UserError, RuntimeError):
    """The run could not go on for a reason the user can fix (data, files, disk): status 1."""


# Always the user's: ours, absl's usage error, and OSError (missing or damaged files, a full
# disk, no permission; DatasetNotFoundError, CorruptDatasetError and the checkpoint errors
# derive from it). A ValueError is the user's only when raised by this project's code.
USER_ERRORS = (UserError, app.UsageError, OSError)


def _raised_here(exc):
    """Was exc raised by a frame of this project (pixelcnn_pp/, data/, the entry points)?"""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = os.path.abspath(tb.tb_frame.f_code.co_filename)
    return os.path.dirname(where) in _OURS


def is_user_error(exc):
    """Does exc carry a message for the user (one line, no traceback)?"""
    return isinstance(exc, USER_ERRORS) or (isinstance(exc, ValueError) and _raised_here(exc))


# TensorFlow's C++ log lines: "I0000 00:00:1796160062.579258    6980 port.cc:153] ...", absl's
# "WARNING: All log messages before absl::InitializeLog() ..." and the CPU feature guard's
# second line.
_TF_LOG_LINE = re.compile(r"^([IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] |"
                          r"WARNING: All log messages before absl::InitializeLog\(\)|"
                          r"To enable the following instructions: .* rebuild TensorFlow)")


def quiet_tensorflow_import():
    """Import TensorFlow with its C++ start-up log lines dropped (the rest of stderr kept).

    Also sets TF_CPP_MIN_LOG_LEVEL=3 when unset, which silences TensorFlow's C++ logging
    later on (e.g. the "failed call to cuInit" line of a machine without a GPU). Called by
    pixelcnn_pp/__init__.py when PIXELCNN_QUIET_TF=1 (the entry points set it) and neither
    --verbose nor PIXELCNN_TRACEBACK asks for everything."""
    if "tensorflow" in sys.modules or \
            any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in sys.argv) or \
            os.environ.get("PIXELCNN_TRACEBACK", "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tempfile
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):       # no usable stderr: nothing to filter
        import tensorflow  # noqa: F401
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(True)
                    if not _TF_LOG_LINE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def error_line(name, exc):
    """``NAME: error: message`` (one line: newlines in the message are folded)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return f"{name}: error: {msg}"


def _exit_status(exc):
    return EXIT_USAGE if isinstance(exc, (UsageError, app.UsageError)) else EXIT_FAILED


def _verbose():
    if os.environ.get("PIXELCNN_TRACEBACK", "") not in ("", "0"):
        return True
    return "verbose" in flags.FLAGS and bool(flags.FLAGS["verbose"].value)


def run(name, main, argv=None):
    """absl's app.run(main) with one-line errors for the user's mistakes (see the module)."""
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_boolean("verbose", False, "Show the full traceback of an error")

    def guarded(argv):
        try:
            return main(argv)
        except Exception as e:      # noqa: BLE001 (internal errors are re-raised)
            if not is_user_error(e) or _verbose():
                raise
            sys.stderr.write(error_line(name, e) + "\n")
            sys.stderr.flush()
            sys.exit(_exit_status(e))

    app.define_help_flags()         # --help, --helpshort, --helpfull
    try:
        argv = flags.FLAGS(sys.argv if argv is None else argv)
    except flags.Error as e:        # an unknown flag, a value of the wrong type, ...
        sys.stderr.write(error_line(name, e) + f" (see {name} --help)\n")
        sys.exit(EXIT_USAGE)
    app.run(guarded, argv=argv, flags_parser=lambda a: a)


# ---------------------------------------------------------------------------- shared flags
MODEL_FLAGS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "resnet_nonlinearity",
               "num_classes", "energy_distance")


def define_model_flags():
    """The flags eval.py, sample.py and score.py name a trained model with: ``--save_dir``
    (a run of train.py, which records its own configuration) or ``--tf1_checkpoint`` with
    the model flags it was trained with, and ``--fast_ops``."""
    flags.DEFINE_string("save_dir", None, "a save_dir written by train.py (its config.json "
                        "says what model it holds)")
    flags.DEFINE_string("tf1_checkpoint", None, "an original TF1 checkpoint prefix (e.g. "
                        "dir/params_cifar.ckpt) or its directory; give the model flags below")
    flags.DEFINE_integer("nr_resnet", 5, "TF1 checkpoint: gated resnets per stage")
    flags.DEFINE_integer("nr_filters", 160, "TF1 checkpoint: filters per layer")
    flags.DEFINE_integer("nr_logistic_mix", 10, "TF1 checkpoint: logistic mixture components")
    flags.DEFINE_enum("resnet_nonlinearity", "concat_elu", ["concat_elu", "elu", "relu"],
                      "TF1 checkpoint: nonlinearity")
    flags.DEFINE_integer("num_classes", 0, "TF1 checkpoint: classes of a class-conditional "
                         "model (0: unconditional)")
    flags.DEFINE_bool("energy_distance", False, "TF1 checkpoint: energy-distance head")
    define_fast_ops_flag()


def define_fast_ops_flag(default=True):
    flags.DEFINE_bool("fast_ops", default, "the faster computations of pixelcnn_pp/fast_ops.py "
                      "(the same formulas); --nofast_ops: the original's ops only")


def model_source(F, image_shape=None):
    """The keyword arguments of ``checkpoint.load_for_inference`` the flags name:
    ``{"save_dir": ...}``, or ``{"tf1_checkpoint": ..., "model_config": ModelConfig}`` with
    the model flags and ``image_shape`` (H, W, C). Checks that exactly one is given and that
    the model flags go with a TF1 checkpoint only (UsageError). Also sets the fast_ops switch
    from --fast_ops."""
    from pixelcnn_pp import fast_ops
    if not F.save_dir and not F.tf1_checkpoint:
        raise UsageError("give --save_dir (a run of train.py) or --tf1_checkpoint")
    if F.save_dir and F.tf1_checkpoint:
        raise UsageError("give --save_dir or --tf1_checkpoint, not both")
    fast_ops.enable(F.fast_ops)
    if F.save_dir:
        given = [f"--{n}" for n in MODEL_FLAGS if F[n].present]
        if given:
            raise UsageError(f"{', '.join(given)}: the model flags are for --tf1_checkpoint; "
                             "a save_dir has its own config.json")
        return {"save_dir": F.save_dir}
    from pixelcnn_pp.config import ModelConfig
    return {"tf1_checkpoint": F.tf1_checkpoint, "model_config": ModelConfig(
        image_shape=tuple(image_shape or (32, 32, 3)), dropout_p=0.0, **tf1_model(F))}


def tf1_model(F):
    """The model flags as ModelConfig arguments (what a TF1 checkpoint was trained with)."""
    return dict(nr_resnet=F.nr_resnet, nr_filters=F.nr_filters,
                nr_logistic_mix=F.nr_logistic_mix, resnet_nonlinearity=F.resnet_nonlinearity,
                num_classes=F.num_classes or None, energy_distance=F.energy_distance)


def check_at_least(F, **lows):
    """UsageError for the first flag (name=lowest allowed value) below its bound."""
    for name, low in lows.items():
        v = F[name].value
        if v is not None and v < low:
            raise UsageError(f"--{name} must be an integer >= {low}; got {v}")


# ---------------------------------------------------------------------------- progress
class ProgressBar:
    """``bar(done, total, extra="")``: one line, redrawn, with a bar, ``unit done/total``,
    images per second and the seconds elapsed. ``images_per_unit``: images per counted unit
    (1 for images, the batch size for steps, batch / H for image rows). ``tty_only``: draw
    only when the stream is a terminal."""

    def __init__(self, label="", unit="images", images_per_unit=1.0, stream=None,
                 tty_only=False, width=30):
        import time
        self._time = time.time
        self.stream = stream or sys.stderr
        self.label = f"{label} " if label else ""
        self.unit, self.images_per_unit, self.width = unit, float(images_per_unit), width
        self.start = time.time()
        self.enabled = not tty_only or (hasattr(self.stream, "isatty") and self.stream.isatty())

    def __call__(self, done, total, extra=""):
        if not self.enabled:
            return
        elapsed = max(self._time() - self.start, 1e-9)
        n = int(self.width * done / max(total, 1))
        rate = done * self.images_per_unit / elapsed
        self.stream.write(f"\r{self.label}[{'#' * n}{'.' * (self.width - n)}] {self.unit} "
                          f"{done}/{total}  {rate:.3g} images/s  {elapsed:.0f}s"
                          + (f"  {extra}" if extra else ""))
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def end(self):
        """End the line (a loop that stopped before ``total``)."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
