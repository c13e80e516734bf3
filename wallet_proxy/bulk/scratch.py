"""One bulk run's rows, journal states and failures, on disk: memory doesn't grow with the file.

`tags import`, `warm` and `attributes sync` check the whole file before sending anything
(duplicate ids included, for the first two), then send row after row; `tags import` and
`attributes sync` look each row up in their journal, and `tags import` lists the failures,
in line order, at the end. Held in memory, all of that grew with the file: 2,000,000 rows
took 1.2 GB. Here it is a SQLite database in a temporary folder (`$TMPDIR`, mode 0700,
removed when the run ends), read back a batch at a time, with a bounded page cache. It
takes about 110 bytes of disk a row.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import click

from ..files import private_database

BATCH = 10_000  # rows written or read at once
CACHE_KIB = 16 * 1024  # SQLite's page cache

# A row: its line, its id, what else the command needs of it (`tags import`: its tags as
# JSON; `attributes sync`: the SessionM user id, when it is not the id), the ttl of its
# tags, and the journal's key of the call; `warm` keeps the line and id only.
Row = tuple[int, str, str | None, int | None, str | None]


class ScratchUnwritable(click.ClickException):
    """The scratch file can't be written (most likely its disk is full): one line, not a
    traceback. What was sent is journaled; a run in the same place resumes."""


class Scratch:
    """A temporary database of one run; thread-safe, for the workers that send."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="wallet-proxy-bulk-")
        path = Path(self._folder.name) / "scratch.sqlite3"
        private_database(path)  # customer ids
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._using():
            self._create()

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The database, for one thread at a time; its failures as ScratchUnwritable."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as error:
                raise ScratchUnwritable(
                    f"the scratch file in {self._folder.name} failed ({error}): point TMPDIR "
                    "at a folder with room, about 110 bytes a row of the file"
                ) from None

    def _create(self) -> None:
        self._db.executescript(
            f"""
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA temp_store = FILE;
            PRAGMA cache_size = -{CACHE_KIB};
            CREATE TABLE row (
                line INTEGER PRIMARY KEY, id TEXT NOT NULL, data TEXT, ttl INTEGER, key TEXT
            );
            CREATE TABLE journal (key TEXT PRIMARY KEY, event TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE failure (
                line INTEGER PRIMARY KEY, reason TEXT NOT NULL, unknown INTEGER NOT NULL
            );
            """
        )

    def close(self) -> None:
        with self._using() as db:
            db.close()
        self._folder.cleanup()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def add_rows(self, rows: Iterable[Row]) -> int:
        """Keep `rows` (in line order); how many there were."""
        return self._insert("INSERT INTO row VALUES (?, ?, ?, ?, ?)", rows)

    def add_journal(self, states: Iterable[tuple[str, str]]) -> None:
        """Each (key, event) of a journal, in its order: the last event of a key stands."""
        self._insert("INSERT OR REPLACE INTO journal VALUES (?, ?)", states)

    def _insert(self, statement: str, values: Iterable[tuple]) -> int:
        count = 0
        batch: list[tuple] = []
        for value in values:
            batch.append(value)
            if len(batch) == BATCH:
                count += self._write(statement, batch)
                batch = []
        return count + self._write(statement, batch)

    def _write(self, statement: str, batch: list[tuple]) -> int:
        with self._using() as db:
            db.execute("BEGIN")
            db.executemany(statement, batch)
            db.execute("COMMIT")
        return len(batch)

    def duplicates(self, first: int) -> tuple[list[tuple[int, str, int]], int]:
        """The `first` rows (by line) whose id is on an earlier line, as (line, id, earlier
        line), and how many such rows there are in all."""
        with self._using() as db:
            db.execute("CREATE INDEX IF NOT EXISTS row_by_id ON row (id, line)")
            (total,) = db.execute("SELECT COUNT(*) - COUNT(DISTINCT id) FROM row").fetchone()
            found = db.execute(
                "SELECT line, id, first FROM ("
                "  SELECT line, id, MIN(line) OVER (PARTITION BY id) AS first FROM row"
                ") WHERE line > first ORDER BY line LIMIT ?",
                (first,),
            ).fetchall()
        return found, total

    def rows(self) -> Iterator[tuple[Row, str | None]]:
        """Every row in line order, with the last event its key has in the journal."""
        for line, user_id, data, ttl, key, event in self._by_line(
            "SELECT row.line, row.id, row.data, row.ttl, row.key, journal.event "
            "FROM row LEFT JOIN journal ON journal.key = row.key "
            "WHERE row.line > ? ORDER BY row.line LIMIT ?"
        ):
            yield (line, user_id, data, ttl, key), event

    def fail(self, line: int, reason: str, *, unknown: bool) -> None:
        """Note that the row at `line` failed (or that its outcome is unknown)."""
        with self._using() as db:
            db.execute("INSERT OR REPLACE INTO failure VALUES (?, ?, ?)", (line, reason, unknown))

    def failures(self) -> Iterator[tuple[Row, str, bool]]:
        """Every failed row in line order, with its reason and whether it is unknown."""
        for line, user_id, data, ttl, key, reason, unknown in self._by_line(
            "SELECT row.line, row.id, row.data, row.ttl, row.key, reason, unknown "
            "FROM failure JOIN row USING (line) "
            "WHERE line > ? ORDER BY line LIMIT ?"
        ):
            yield (line, user_id, data, ttl, key), reason, bool(unknown)

    def _by_line(self, query: str) -> Iterator[tuple]:
        """What `query` selects, a line first (after its first `?`, at most its second), read
        a batch at a time: no cursor stays open while the workers write failures."""
        after = 0
        while True:
            with self._using() as db:
                batch = db.execute(query, (after, BATCH)).fetchall()
            if not batch:
                return
            yield from batch
            after = batch[-1][0]
