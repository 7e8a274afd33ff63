"""Atomic file output: a reader never sees a half-written checkpoint, answer or report.

Everything is written to a temporary file in the destination folder and moved into
place with :func:`os.replace`, which is atomic on POSIX and Windows within one volume.
Files that only make sense together (an answer and its zip) are written as one unit by
:func:`write_files_together`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from mcgf.errors import UserError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; move it into place on success
    (:func:`atomic_path` with the file opened).

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` for a writer that takes a file name (and writes
    straight to disk, with no copy of the data in memory); on success the file is
    fsynced and moved into place, as :func:`atomic_write` does.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions of a normal open().
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_mode() -> int:
    """The permissions ``open()`` gives a new file under this process's umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, LF line ends) to ``path`` atomically."""
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_json_atomic(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (keys kept in insertion order)."""
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` in a new, fsynced temporary sibling of ``path`` with normal permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def write_files_together(files: Mapping[str | Path, bytes], *, remove: Iterable[str | Path] = ()) -> None:
    """Write several files as one unit, and remove files that described their earlier versions.

    All new contents are written to temporary siblings first. Then the earlier files
    (the destinations and everything in ``remove``) are renamed aside, the new files
    renamed into place, and the earlier ones deleted. If anything fails the new files are
    taken away and the earlier ones put back: the folder holds either the complete old
    set or the complete new one (without the ``remove`` files), never a mix. An
    interruption by the operating system (power loss) can leave hidden ``.NAME.old-*``
    copies, never a new file beside an old partner.
    """
    targets = [Path(p) for p in files]
    stale = list(dict.fromkeys([*targets, *(Path(p) for p in remove)]))
    temps: list[Path] = []
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, data in zip(targets, files.values(), strict=True):
            temps.append(_write_temp(path, data))
        for path in stale:
            if path.exists() or path.is_symlink():
                old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(path, old)
                aside.append((path, old))
        for tmp, path in zip(temps, targets, strict=True):
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for path in [*placed, *temps]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for path, old in reversed(aside):
            with contextlib.suppress(OSError):
                os.replace(old, path)
        raise
    for folder in dict.fromkeys(p.parent for p in stale):
        fsync_dir(folder)
    for _, old in aside:
        with contextlib.suppress(OSError):
            os.unlink(old)


def fsync_dir(path: str | Path) -> None:
    """Make renames inside ``path`` durable (a no-op where directories cannot be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_dir(tmp: str | Path, dest: str | Path) -> None:
    """Move the finished folder ``tmp`` to ``dest``, replacing an earlier folder there.

    The earlier folder is renamed aside first and deleted only once ``tmp`` is in place
    (it is put back if that rename fails), so ``dest`` is never half-written.
    """
    tmp, dest = Path(tmp), Path(dest)
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


#: Folders this process holds a :func:`folder_lock` on: ``(device, inode) -> [fd, depth]``.
_HELD_LOCKS: dict[tuple[int, int], list[int]] = {}


def _close_locks_in_child() -> None:
    """In a forked child, close its copies of the lock descriptors: ``flock`` belongs to
    the open file, which a child (a DataLoader worker, persistent ones outliving a
    ``train()`` that raised) would otherwise keep locked after this process let go."""
    for entry in _HELD_LOCKS.values():
        if entry[0] >= 0:
            with contextlib.suppress(OSError):
                os.close(entry[0])
            entry[0] = -1


if hasattr(os, "register_at_fork"):  # not on Windows, which neither forks nor has flock
    os.register_at_fork(after_in_child=_close_locks_in_child)


@contextlib.contextmanager
def folder_lock(folder: str | Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs, so
    that two processes never write the same run folder at once.

    The lock is ``flock`` on the folder itself: no lock file is left behind, and the
    operating system releases it when the process ends, however it ends. Re-entrant within
    a process. Where the filesystem or platform has no such locks, the block runs
    unlocked. A folder this call created is removed again if it is still empty at the end.

    Raises:
        UserError: another process holds the lock; the message is ``busy``.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    st = folder.stat()
    key = (st.st_dev, st.st_ino)
    held = _HELD_LOCKS.get(key)
    if held is not None:
        held[1] += 1
    else:
        _HELD_LOCKS[key] = [_lock_fd(folder, busy), 1]
    try:
        yield
    finally:
        entry = _HELD_LOCKS[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD_LOCKS[key]
            if entry[0] >= 0:
                os.close(entry[0])  # releases the lock
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty


def _lock_fd(folder: Path, busy: str) -> int:
    """A descriptor of ``folder`` holding its ``flock`` (``-1``: no such locks here)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        return -1  # Windows opens no folder this way and has no flock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(busy) from None
    except OSError:
        pass  # a filesystem without flock (some network ones): unlocked
    return fd
