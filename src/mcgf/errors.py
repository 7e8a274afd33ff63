"""Exceptions that mean "the user must fix an input", not "the program has a bug".

The command line prints a :class:`UserError` as one line and exits non-zero without a
traceback; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with a file, folder or option that the user can fix.

    The message must name the offending file or option and say what to do.
    """


class ImageReadError(UserError):
    """An image file could not be decoded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"cannot read image {self.path}: {reason} "
            "(fix or remove the file, or run with --on-bad-image skip)"
        )

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[Path, str]]:
        # Rebuilt from (path, reason), so that the error crosses from a worker process.
        return type(self), (self.path, self.reason)


class DeprecatedOptionWarning(FutureWarning):
    """A config uses an option under its former name or section; it still works, and the
    one-line message says what to write instead (the command line prints it as
    ``mcgf: warning: ...``)."""
