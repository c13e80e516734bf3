"""The files `tags import` keeps next to the CSV (FILE.journal, FILE.failed.csv), made safe.

The folder may be shared, so what sits at those names is not trusted: a symbolic link is
never followed (its target would be overwritten), anything but a regular file is refused,
and FILE.failed.csv is written to a fresh temporary file of its own and then renamed over.
Every refusal is one line and exit 2, before anything is sent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..files import OWNER_ONLY, make_private
from .csvinput import BadInput

_MOVE_IT = "move it away, then run again"


def open_no_follow(path: Path, flags: int) -> int:
    """`os.open` of a regular file with one name, never through a symbolic link; one it
    creates is for the user running the command only (mode 0600, see files.py)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, OWNER_ONLY)
    except OSError as error:
        raise BadInput(_refusal(path, error)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        kind = "has other hard links" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        raise BadInput(f"{path} {kind}; {_MOVE_IT}")
    return fd


def check_replaceable(path: Path) -> None:
    """Refuse, up front, a name that a finished run could not safely replace."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise BadInput(f"{path} is a symbolic link, which is never followed; {_MOVE_IT}")
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"{path} is not a regular file; {_MOVE_IT}")


def replace_with(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write a new file under a fresh, exclusive temporary name, then rename it to `path`.

    The rename replaces whatever is at `path` (a link included) without writing through it.
    """
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        make_private(fd)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            write(handle)
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
        raise


def _refusal(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return f"{path} is a symbolic link, which is never followed; {_MOVE_IT}"
    if error.errno == errno.EISDIR:
        return f"{path} is a directory; {_MOVE_IT}"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"cannot write {path} ({error.strerror}): it is kept next to the CSV, so run "
            "from a folder you can write to"
        )
    return f"cannot open {path}: {error.strerror}"
