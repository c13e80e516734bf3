"""The bulk journals (`tags import`'s FILE.journal, `attributes sync`'s FILE.sync.journal): one
fsync'd JSON line per event, per row sent.

A journal is read a chunk at a time into the run's Scratch (scratch.py), where each row is
looked up: a journal of millions of lines takes no more memory than one of ten.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from ..files import make_private
from .csvinput import BadInput, key_text, tag_key
from .scratch import Scratch
from .sidecars import open_no_follow

SENDING, ACCEPTED, NOT_APPLIED = "sending", "accepted", "not_applied"
EVENTS = (SENDING, ACCEPTED, NOT_APPLIED)
CHUNK = 1 << 20
MAX_LINE = 1 << 20  # a journal line is a few hundred bytes: longer is damage


class Journaled(Protocol):
    """A row as a journal keeps it: (id type, id, tags, ttl), and its line in the file."""

    @property
    def line(self) -> int: ...

    @property
    def key(self) -> tuple: ...


def read_journal(path: Path, scratch: Scratch) -> None:
    """The last event of each row key into `scratch` (nothing if there is no journal)."""
    if not os.path.lexists(path):
        return
    fd = open_no_follow(path, os.O_RDONLY)
    try:
        _load(path, fd, scratch)
    finally:
        os.close(fd)


def _load(path: Path, fd: int, scratch: Scratch) -> int:
    """Each whole line's (key, event) into `scratch`; the bytes of the whole lines (a last
    line torn by a kill mid-write is left out)."""
    whole = 0

    def states() -> Iterator[tuple[str, str]]:
        nonlocal whole
        number, offset, rest = 0, 0, b""
        while chunk := os.pread(fd, CHUNK, offset):
            offset += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                number += 1
                whole += len(line) + 1
                yield _state(path, number, line)
            if len(rest) > MAX_LINE:
                raise _damaged(path, number + 1)

    scratch.add_journal(states())
    return whole


def _state(path: Path, number: int, line: bytes) -> tuple[str, str]:
    try:
        entry = json.loads(line)
        # Tags sorted: journals written before the key ignored their order read the same.
        key = tag_key(entry["id_type"], entry["id"], entry["tags"], entry["ttl"])
        if entry["event"] not in EVENTS:
            raise ValueError(entry["event"])
    except (ValueError, KeyError, TypeError):
        raise _damaged(path, number) from None
    return key_text(key), entry["event"]


def _damaged(path: Path, number: int) -> BadInput:
    return BadInput(
        f"{path} line {number} is not a journal record; the journal is damaged. "
        "Move it away only if you know which rows SessionM already has."
    )


class Journal:
    """Append-only, one fsync'd line per event, locked against a second concurrent run.

    Workers share fsyncs (group commit): whoever syncs covers every line written so far,
    so concurrency doesn't turn into a queue of fsyncs.
    """

    def __init__(self, path: Path, scratch: Scratch):
        """Opens and locks the journal, its states read into `scratch`."""
        self.path = path
        created = not os.path.lexists(path)
        self._fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise BadInput(f"another run is using {path}; wait for it to finish") from None
        try:
            whole = _load(path, self._fd, scratch)
        except BadInput:
            os.close(self._fd)
            raise
        os.ftruncate(self._fd, whole)  # drop a line torn by a kill mid-write
        if created:
            make_private(self._fd)
            _fsync_dir(path.parent)
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = self._synced = 0

    def record(self, event: str, row: Journaled) -> None:
        """Returns once the line is on disk."""
        id_type, user_id, tags, ttl = row.key
        line = json.dumps(
            {
                "event": event,
                "id_type": id_type,
                "id": user_id,
                "tags": list(tags),
                "ttl": ttl,
                "line": row.line,
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            },
            ensure_ascii=False,
        )
        with self._write_lock:
            os.write(self._fd, (line + "\n").encode())
            self._written += 1
            mine = self._written
        with self._sync_lock:
            if self._synced < mine:
                upto = self._written
                os.fsync(self._fd)
                self._synced = upto

    def close(self) -> None:
        os.close(self._fd)  # also releases the lock


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
