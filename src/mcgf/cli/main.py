"""Entry point of the ``mcgf`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking
the parsed namespace and returning an exit code). Heavy libraries are imported inside
those functions so that ``mcgf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from mcgf import __version__
from mcgf.cli.process import (
    Terminated,
    ascii_stand_ins,
    disk_full,
    peer_left,
    sigterm_interrupts,
    warnings_on_rank_0,
)
from mcgf.errors import DeprecatedOptionWarning, ImageReadError, UserError
from mcgf.launch import launcher_rank

# Order here is the order in ``mcgf --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "train",
    "synth",
    "data",
    "evaluate",
    "predict",
    "weather",
    "restore",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="mcgf",
        description="Multi-weather cross-view geo-localization (drone <-> satellite).",
    )
    parser.add_argument("--version", action="version", version=f"mcgf {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help=IMPORT_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mcgf.cli.{name}").register(subparsers)
    _import_option_everywhere(subparsers)
    return parser


IMPORT_HELP = ("import MODULE before the command, e.g. one that registers a model, an embedder "
               "or a dataset layout of your own: a module name (found in the current folder or "
               "on the Python path) or a .py file; repeatable")


def _import_option_everywhere(subparsers: argparse._SubParsersAction, depth: int = 1) -> None:
    """Give every command (and sub-command) ``--import`` too, so that it may also follow
    the command name (``mcgf train --import mymodels ...``); each level collects into
    ``imports_after_<depth>``, since a sub-parser's value replaces its parent's of the
    same name (``mcgf data --import a check --import b`` would lose ``a``)."""
    for sub in dict.fromkeys(subparsers.choices.values()):
        sub.add_argument("--import", dest=f"imports_after_{depth}", action="append",
                         default=argparse.SUPPRESS, metavar="MODULE", help=IMPORT_HELP)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _import_option_everywhere(action, depth + 1)


def _imports(args: argparse.Namespace) -> list[str]:
    """Every ``--import`` of ``args``, in command-line order (levels before and after the
    command, then after each sub-command)."""
    after = sorted((int(k.rpartition("_")[2]), v) for k, v in vars(args).items()
                   if k.startswith("imports_after_"))
    return [*args.imports, *(name for _, names in after for name in names)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    A :class:`~mcgf.errors.UserError` is printed as one line on stderr (exit code 2);
    any other exception is a bug and propagates with its traceback. Under ``torchrun``
    only rank 0 prints warnings (see :func:`warnings_on_rank_0`), and a rank whose
    collective call fails because another rank left (its own error, or a bug, printed
    there) ends with one line and exit code 1 instead of the collective's traceback.
    Ctrl-C and SIGTERM end with one line and exit codes 130 and 143. A
    full disk or quota is one line too (exit code 2): the outputs are written atomically,
    so the files complete before it are kept.
    """
    ascii_stand_ins()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)  # exit code 2: not a result a script would keep
        return 2
    try:
        with warnings.catch_warnings(), warnings_on_rank_0(), sigterm_interrupts():
            warnings.showwarning = _one_line_deprecations(warnings.showwarning)
            import_modules(_imports(args))
            return int(args.func(args) or 0)
    except ImageReadError as err:
        print(f"mcgf: error: {_worded_for(err, args)}", file=sys.stderr)
        return 2
    except UserError as err:
        print(f"mcgf: error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        print("mcgf: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("mcgf: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as err:
        if not peer_left(err):
            return _stop_on_full_disk(err, args)
        # Not this rank's fault: the rank that left printed why (its one-line error, or the
        # traceback of a bug); the collective's traceback here would only bury that.
        print(f"mcgf: error: rank {launcher_rank()} stops: another process of this torchrun job "
              "stopped first (its output says why)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as err:
        return _stop_on_full_disk(err, args)


def _stop_on_full_disk(err: Exception, args: argparse.Namespace) -> int:
    """Exit code 2 after one line when ``err`` is a full disk (:func:`disk_full`);
    otherwise ``err`` is a bug and is raised again with its traceback."""
    full = disk_full(err)
    if full is None:
        raise err
    # Every output is written atomically: what was complete before is still there.
    last = Path(args.out) / "last" if args.command == "train" else None
    hint = (f" with --resume, which goes on from the last complete checkpoint {last}"
            if last is not None and last.is_dir() else "")
    print(f"mcgf: error: {full}: free some space and run the command again{hint}",
          file=sys.stderr)
    return 2


def import_modules(names: Sequence[str]) -> None:
    """Import each of ``names`` (``--import``): a module name, looked up on ``sys.path`` and
    in the current folder (which the ``mcgf`` script, unlike ``python -m``, does not
    search), or the path of a ``.py`` file, imported under its stem with its folder added
    to ``sys.path`` (so it can import the modules beside it). A module imported twice runs
    once, so the models and embedders it registers are registered once.

    Raises:
        UserError: a file that does not exist, a module that cannot be found, or a file
            whose stem names another module already loaded.
    """
    for name in names:
        path = Path(name)
        if path.suffix == ".py" or len(path.parts) > 1:
            if not path.is_file():
                raise UserError(f"--import {name}: no such file")
            _append_to_path(str(path.resolve().parent))
            module = _import_module(path.stem, name)
            loaded = Path(getattr(module, "__file__", None) or "")
            if not loaded.is_file() or not loaded.samefile(path):
                raise UserError(f"--import {name}: another module named {path.stem!r} is "
                                f"already loaded ({loaded}): rename the file")
        else:
            _append_to_path(os.getcwd())
            _import_module(name, name)


def _append_to_path(folder: str) -> None:
    if folder not in sys.path and not (folder == os.getcwd() and "" in sys.path):
        sys.path.append(folder)


def _import_module(module: str, given: str) -> object:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or not (module == err.name or module.startswith(f"{err.name}.")):
            raise  # the module itself imports something missing: its traceback says what
        raise UserError(f"--import {given}: no module named {err.name!r} in the current "
                        "folder or on the Python path") from None


def _worded_for(err: ImageReadError, args: argparse.Namespace) -> ImageReadError:
    """``err`` with the way ``args``' command skips unreadable images: ``--on-bad-image``
    where the command has it, ``data.on_bad_image`` for training, none elsewhere."""
    if hasattr(args, "on_bad_image"):
        return err
    skip = "set data.on_bad_image: skip (--set data.on_bad_image=skip)" if args.command == "train" else ""
    return ImageReadError(err.path, err.reason, skip)


def _one_line_deprecations(fallback: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints a deprecated option as one line
    (``mcgf: warning: ...``) and leaves other warnings to ``fallback``."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, DeprecatedOptionWarning):
            print(f"mcgf: warning: {message}", file=file or sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


if __name__ == "__main__":
    raise SystemExit(main())
