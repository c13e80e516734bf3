"""Files only the service's user can read: everything the service and its commands write.

The trigger outbox holds Braze ids, emails and offers; the shared store, staff names and the
customers they opened; the bulk journals and failed-row files, customer ids. Each is made
mode 0600 by fchmod after it is opened, so neither the umask nor a data folder that already
exists with wider permissions (the image makes it 0755) lets another user read it.

SQLite creates a database's `-wal` and `-shm` files with the database file's own mode, so a
database made private before SQLite first opens it keeps its companions private too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

OWNER_ONLY = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm")


def make_private(fd: int) -> None:
    """Mode 0600 exactly, whatever the umask took away or an older version left."""
    os.fchmod(fd, OWNER_ONLY)


def open_private(path: Path, flags: int) -> int:
    """`os.open` creating the file if need be, never through a symbolic link, mode 0600."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, OWNER_ONLY)
    try:
        make_private(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_database(path: Path) -> None:
    """Create the SQLite file at `path` (or tighten one an older version made) before SQLite
    opens it, with its companions if they are there already. Raises OSError."""
    os.close(open_private(path, os.O_RDWR))
    for suffix in SQLITE_COMPANIONS:
        with contextlib.suppress(FileNotFoundError):  # SQLite removes them when it closes
            companion = os.open(f"{path}{suffix}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                make_private(companion)
            finally:
                os.close(companion)
