"""The command-line layer: what every command (train, eval, sample, score) shares. The
library never imports it.

    pixelcnn_pp/cli/train.py, eval.py, sample.py, score.py   one command each: flags -> one
                                                              library call; ``main()`` is the
                                                              console command
    pixelcnn_pp/cli/shared_flags.py      the flags that name a trained model, shared checks
    pixelcnn_pp/cli/progress.py   the progress bar

A mistake the user can fix ends the command with one line on stderr,
``NAME: error: <message>``, and no traceback: exit status 2 for a usage error (bad flags,
``errors.UsageError``, absl's ``app.UsageError``), 1 for a run that failed (any other
``errors.UserError``, and an ``OSError``: missing or damaged data, files and checkpoints, a
full disk, no permission). The library raises its user errors explicitly
(pixelcnn_pp/errors.py); anything else is an internal error and keeps its traceback.
``--verbose`` or ``PIXELCNN_TRACEBACK=1`` shows the traceback of a user error too. Chained
exceptions (``raise ... from e``) are not printed: the message says what to do.

TensorFlow's C++ start-up lines (``I0000 ... port.cc:153] oneDNN custom operations are on``,
``failed call to cuInit``, ...) would spoil the one line: ``run`` imports TensorFlow with
``TF_CPP_MIN_LOG_LEVEL=3`` (unless set already) and those lines dropped (see
``quiet_tensorflow_import``); Python warnings and every other line go through. ``--verbose``
or ``PIXELCNN_QUIET_TF=0`` in the environment keeps TensorFlow's lines.
"""

import importlib
import os
import re
import sys

from absl import app, flags
from absl import logging as absl_logging

from pixelcnn_pp.cli.shared_flags import (check_at_least, define_fast_ops_flag, define_model_flags,
                                   model_source, tf1_model)
from pixelcnn_pp.cli.progress import ProgressBar
from pixelcnn_pp.errors import RunError, UsageError, UserError

__all__ = ["UserError", "UsageError", "RunError", "USER_ERRORS", "run", "error_line",
           "is_user_error", "quiet_tensorflow_import", "command_name", "ProgressBar",
           "define_model_flags", "define_fast_ops_flag", "model_source", "tf1_model",
           "check_at_least"]

EXIT_FAILED, EXIT_USAGE = 1, 2

# The user's: the library's errors written for the user, absl's usage error, and OSError
# (missing or damaged files, a full disk, no permission; the data and checkpoint errors
# derive from it too).
USER_ERRORS = (UserError, app.UsageError, OSError)


def is_user_error(exc):
    """Does exc carry a message for the user (one line, no traceback)?"""
    return isinstance(exc, USER_ERRORS)


# TensorFlow's C++ log lines: "I0000 00:00:1796160062.579258    6980 port.cc:153] ...", absl's
# "WARNING: All log messages before absl::InitializeLog() ..." and the CPU feature guard's
# second line.
_TF_LOG_LINE = re.compile(r"^([IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] |"
                          r"WARNING: All log messages before absl::InitializeLog\(\)|"
                          r"To enable the following instructions: .* rebuild TensorFlow)")


def _keep_tf_lines():
    return (any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in sys.argv)
            or os.environ.get("PIXELCNN_TRACEBACK", "") not in ("", "0")
            or os.environ.get("PIXELCNN_QUIET_TF", "1") == "0")


def quiet_tensorflow_import():
    """Import TensorFlow with its C++ start-up log lines dropped (the rest of stderr kept).

    Also sets TF_CPP_MIN_LOG_LEVEL=3 when unset, which silences TensorFlow's C++ logging
    later on (e.g. the "failed call to cuInit" line of a machine without a GPU). Does nothing
    when TensorFlow is imported already, or --verbose / PIXELCNN_TRACEBACK /
    PIXELCNN_QUIET_TF=0 asks for everything."""
    if "tensorflow" in sys.modules or _keep_tf_lines():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tempfile
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):       # no usable stderr: nothing to filter
        importlib.import_module("tensorflow")
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
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


def command_name(default):
    """How the user called the command: ``train.py`` for the script, ``pixelcnn-train`` for
    the console command."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return called if called and called != "-c" else default


def _exit_status(exc):
    return EXIT_USAGE if isinstance(exc, (UsageError, app.UsageError)) else EXIT_FAILED


def _verbose():
    if os.environ.get("PIXELCNN_TRACEBACK", "") not in ("", "0"):
        return True
    return "verbose" in flags.FLAGS and bool(flags.FLAGS["verbose"].value)


_HELP_FLAGS = ("--help", "-help", "--helpshort", "--helpfull", "-h", "-?", "--helpxml")


def _asked_for_help(argv):
    return any(a in _HELP_FLAGS for a in (sys.argv if argv is None else argv)[1:])


def run(name, main, argv=None, quick_exit=False):
    """absl's app.run(main) with one-line errors for the user's mistakes (see the module),
    TensorFlow imported quietly first (not for --help, which needs none).

    quick_exit: when main returns, the process ends at once (output flushed, status 0, no
    atexit handlers) instead of tearing down the interpreter and TensorFlow's objects one by
    one, which takes ~0.5 s after the full model: for the scripts and console commands
    (``command()``) of commands whose files are written and closed when main returns, never
    for a call from other Python code, which gets SystemExit as from absl's app.run."""
    if not _asked_for_help(argv):
        quiet_tensorflow_import()
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_boolean("verbose", False, "Show the full traceback of an error")

    def guarded(argv):
        if not _verbose():   # TensorFlow's Python-side INFO lines (e.g. checkpoint sharding)
            absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            result = main(argv)
            if quick_exit:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            return result
        except Exception as e:      # noqa: BLE001 (internal errors are re-raised)
            if not is_user_error(e) or _verbose():
                raise
            sys.stderr.write(error_line(name, e) + "\n")
            sys.stderr.flush()
            sys.exit(_exit_status(e))

    app.define_help_flags()         # --help, --helpshort, --helpfull (status 0, not absl's 1)
    # --help lists the main module's flags: the command's are defined in pixelcnn_pp/cli/.
    for module, defined in flags.FLAGS.flags_by_module_dict().items():
        if module.startswith(__name__):
            for flag in defined:
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    try:
        argv = flags.FLAGS(sys.argv if argv is None else argv)
    except SystemExit as e:         # absl printed the help asked for and exits with 1
        sys.exit(0 if e.code == 1 and _asked_for_help(argv) else e.code)
    except flags.Error as e:        # an unknown flag, a value of the wrong type, ...
        sys.stderr.write(error_line(name, e) + f" (see {name} --help)\n")
        sys.exit(EXIT_USAGE)
    app.run(guarded, argv=argv, flags_parser=lambda a: a)
