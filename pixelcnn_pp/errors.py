"""The errors whose message is written for the user: what went wrong, which file or argument,
what to do. The library raises them explicitly where a user can cause the problem; the
command-line layer (``pixelcnn_pp.cli``) prints them as one line and no traceback. Internal
invariants are assertions, and anything else keeps its traceback.

No dependencies: every part of the package, and a user's own DataLoader, may import this.
"""

__all__ = ["UserError", "UsageError", "InvalidInputError", "RunError"]


class UserError(Exception):
    """Base of the errors written for the user."""


class UsageError(UserError, ValueError):
    """The flags or arguments make no sense together (a command exits with status 2)."""


class InvalidInputError(UserError, ValueError):
    """An argument or a file's contents the library cannot use: a shape, a range, a batch
    that does not fit (status 1)."""


class RunError(UserError, RuntimeError):
    """The run could not go on for a reason the user can fix: data, files, disk (status 1)."""
