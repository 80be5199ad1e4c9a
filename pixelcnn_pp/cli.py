"""How every entry point (train.py, eval.py, sample.py, score.py) reports a user's mistake.

    from pixelcnn_pp import cli
    ...
    if __name__ == "__main__":
        cli.run("train.py", main)          # instead of absl's app.run(main)

A mistake the user can fix ends the program with one line on stderr,
``NAME.py: error: <message>``, and no traceback: exit status 2 for a usage error (bad flags,
``cli.UsageError``, absl's ``app.UsageError``), 1 for a run that failed (``cli.RunError`` and
the library's own errors for missing or damaged data, files and checkpoints). Anything else is
an internal error and keeps its traceback. ``--verbose`` or ``PIXELCNN_TRACEBACK=1`` shows the
traceback of a user error too. Chained exceptions (``raise ... from e``) are not printed: the
message says what to do.
"""

import os
import sys

from absl import app, flags

__all__ = ["UsageError", "RunError", "USER_ERRORS", "run", "error_line"]

EXIT_FAILED, EXIT_USAGE = 1, 2


class UsageError(ValueError):
    """The flags (or arguments) make no sense: exit status 2."""


class RunError(RuntimeError):
    """The run could not go on for a reason the user can fix (data, files, disk): status 1."""


# Exceptions whose message is written for the user. ValueError: the library's argument checks
# (every one of them says what to do); OSError: missing or damaged files, a full disk, no
# permission (DatasetNotFoundError, CorruptDatasetError and checkpoint errors derive from it).
USER_ERRORS = (UsageError, app.UsageError, RunError, ValueError, OSError)


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
        except USER_ERRORS as e:
            if _verbose():
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
