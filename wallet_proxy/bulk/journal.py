"""The bulk journals (`tags import`'s FILE.journal, `attributes sync`'s FILE.sync.journal): one
fsync'd JSON line per event, per row sent."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from ..files import make_private
from .csvinput import BadInput, tag_key
from .sidecars import open_no_follow

SENDING, ACCEPTED, NOT_APPLIED = "sending", "accepted", "not_applied"
EVENTS = (SENDING, ACCEPTED, NOT_APPLIED)


class Journaled(Protocol):
    """A row as a journal keeps it: (id type, id, tags, ttl), and its line in the file."""

    @property
    def line(self) -> int: ...

    @property
    def key(self) -> tuple: ...


def read_journal(path: Path) -> tuple[dict[tuple, str], int]:
    """(last event per row key, bytes of whole lines): a torn last line is ignored."""
    if not os.path.lexists(path):
        return {}, 0
    fd = open_no_follow(path, os.O_RDONLY)
    try:
        return _parse(path, _read_all(fd))
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _parse(path: Path, data: bytes) -> tuple[dict[tuple, str], int]:
    states: dict[tuple, str] = {}
    whole = data.rfind(b"\n") + 1
    for number, line in enumerate(data[:whole].split(b"\n")[:-1], 1):
        try:
            entry = json.loads(line)
            # Tags sorted: journals written before the key ignored their order read the same.
            key = tag_key(entry["id_type"], entry["id"], entry["tags"], entry["ttl"])
            if entry["event"] not in EVENTS:
                raise ValueError(entry["event"])
        except (ValueError, KeyError, TypeError):
            raise BadInput(
                f"{path} line {number} is not a journal record; the journal is damaged. "
                "Move it away only if you know which rows SessionM already has."
            ) from None
        states[key] = entry["event"]
    return states, whole


class Journal:
    """Append-only, one fsync'd line per event, locked against a second concurrent run.

    Workers share fsyncs (group commit): whoever syncs covers every line written so far,
    so concurrency doesn't turn into a queue of fsyncs.
    """

    def __init__(self, path: Path):
        self.path = path
        created = not os.path.lexists(path)
        self._fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise BadInput(f"another run is using {path}; wait for it to finish") from None
        try:
            self.states, whole = _parse(path, _read_all(self._fd))
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
            self.states[row.key] = event
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
