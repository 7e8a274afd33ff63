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


class NameTaken(UserError, ValueError):
    """A model, embedder or dataset layout of one's own registered under a name another
    one has (a built-in's included). A :class:`ValueError` too, as before it was a
    :class:`UserError`."""


class ImageReadError(UserError):
    """An image file could not be decoded.

    ``skip`` says how to skip unreadable images instead (``""``: not possible); the
    command line words it for the command that met the image.
    """

    def __init__(self, path: str | Path, reason: str, skip: str = "run with --on-bad-image skip") -> None:
        self.path = Path(path)
        self.reason = reason
        self.skip = skip
        super().__init__(
            f"cannot read image {self.path}: {reason} "
            f"(fix or remove the file{', or ' + skip if skip else ''})"
        )

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[Path, str, str]]:
        # Rebuilt from its fields, so that the error crosses from a worker process.
        return type(self), (self.path, self.reason, self.skip)


class DeprecatedOptionWarning(FutureWarning):
    """A config uses an option under its former name or section; it still works, and the
    one-line message says what to write instead (the command line prints it as
    ``mcgf: warning: ...``)."""


#: File name endings of archives that a dataset is often downloaded as.
_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def folder_error(what: str, path: str | Path) -> UserError:
    """The one-line error for a folder ``path`` (named ``what``) that is not there: it
    does not exist, or it is a file (an archive: unpack it first)."""
    p = Path(path)
    if not p.exists():
        return UserError(f"{what} {p} does not exist")
    hint = ("unpack it and point at the unpacked folder" if p.name.lower().endswith(_ARCHIVES)
            else "point at the folder that holds it")
    return UserError(f"{what} {p} is a file, not a folder: {hint}")
