"""The outbox in SQLite, for one instance: a file in WALLET_PROXY_DATA_DIR.

WAL mode with `synchronous=FULL`: a commit is on disk before `add` returns, so a 202
means the trigger survives a kill -9 or a power cut. Concurrent adds in one process share
a transaction and its fsync (group commit). Each thread has its own connection; writers
take the lock up front (BEGIN IMMEDIATE) so two transactions never deadlock upgrading a
read lock. Counts per queue and state, and the ledger of bytes per part (outbox.py), are
kept by SQL triggers in the same transactions, so the bounds are checked by reading a few
rows rather than counting 100,000.

Every queue of the outbox (outbox.Queue) is in the same table, told apart by `queue`, so
they share the file, its write lock, its group commits and WALLET_PROXY_TRIGGER_MAX_BYTES.
A file written before queues existed (its rows are all triggers), or before bodies had a
table of their own, is brought up to date when it is opened.

On disk, WALLET_PROXY_TRIGGER_MAX_BYTES covers the outbox's files: the records (what
the ledger counts), the write-ahead log (checkpointed and cut back at `wal_bytes`) and a
reserve file. The reserve is what delivery writes into when the disk is full: a write of
the deliverer's that finds no room gives it back to the filesystem and checkpoints the
log, so triggers already stored are still sent, while intake refuses (DiskFull) until
there is room for a trigger, the log, and the reserve again. Pages freed by pruning are
reused; those freed by purging are given back to the filesystem (incremental vacuum).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .. import metrics
from ..files import open_private, private_database
from .model import DEAD, QUEUED, SENDING, SENT, UNKNOWN, Record
from .outbox import (
    ADD_BOUND,
    ALL_STATES,
    BROADCASTS_PER_MINUTE,
    DEAD_RETENTION,
    DEDUPE_PART,
    DEFAULT_MAX_BYTES,
    FINISHED,
    MOVES,
    PRUNABLE_STATES,
    PRUNED,
    SENT_RETENTION,
    TRIGGERS,
    Accepted,
    Costs,
    Dedupe,
    DedupeConflict,
    DiskFull,
    OutboxError,
    OutboxFull,
    OutcomeUnknown,
    Queue,
    Queued,
    Room,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

FILE_NAME = "triggers.sqlite3"
RESERVE_NAME = "triggers.reserve"
BUSY_TIMEOUT_MS = 50  # for statements inside a transaction; BEGIN waits in _begin_immediate
START_TIMEOUT_MS = 10_000
WRITE_WAIT = 10.0  # seconds the deliverer's and operators' writes wait for their turn
# An add waits this long for its turn to write, so that with its commit it answers
# within ADD_BOUND (a disk that stalls an fsync for longer is the one exception).
ADD_WAIT = ADD_BOUND - 0.5
# The write-ahead log and the reserve: each a sixteenth of the bound, at most 4 MiB
# (SQLite's own checkpoint size), so a small bound still leaves most of it to records.
SHARE_OF_BOUND = 16
MAX_WAL_BYTES = MAX_RESERVE_BYTES = 4 * 1024 * 1024
# Measured: a row holds about 150 bytes besides the body, and a row over half a page has a
# page to itself; a record's index entries take about 200 bytes, a dedupe record 290.
COSTS = Costs(per_record=320, per_dedupe=384, page=4096, row_fields=160)
VACUUM_STEP = 256  # pages given back per transaction, so the log stays short
EXPIRE_DEDUPES = 100  # expired dedupe records forgotten per group of adds (purge: the rest)

# A body has a table of its own: SQLite rewrites a whole row when it changes, and a row
# holding a 50 KB body would put 50 KB in the log at each change of its state.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    recipient TEXT,
    state TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    queued_at REAL NOT NULL,
    due_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    dispatch_id TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    queue TEXT NOT NULL DEFAULT 'triggers',
    size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (queue, state, due_at);
CREATE INDEX IF NOT EXISTS outbox_target ON outbox (state, target, due_at);
CREATE INDEX IF NOT EXISTS outbox_lease ON outbox (state, lease_until);
CREATE INDEX IF NOT EXISTS outbox_updated ON outbox (state, updated_at);
CREATE INDEX IF NOT EXISTS outbox_recipient ON outbox (recipient, accepted_at);
CREATE TABLE IF NOT EXISTS bodies (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dedupe_expiry ON dedupe (expires_at);
CREATE TABLE IF NOT EXISTS queue_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
);
CREATE TABLE IF NOT EXISTS usage (part TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS broadcasts (at REAL NOT NULL);
CREATE TRIGGER IF NOT EXISTS queue_count_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS queue_count_update AFTER UPDATE OF state ON outbox
WHEN OLD.state <> NEW.state BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS queue_count_delete AFTER DELETE ON outbox BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS bodies_delete AFTER DELETE ON outbox BEGIN
    DELETE FROM bodies WHERE id = OLD.id;
END;
"""

# A file from before queues: its rows become the triggers' queue, its counts per state
# give way to counts per queue and state (recounted from the rows in the same transaction).
_BEFORE_QUEUES = (
    "ALTER TABLE outbox ADD COLUMN queue TEXT NOT NULL DEFAULT 'triggers'",
    "DROP TRIGGER IF EXISTS count_insert",
    "DROP TRIGGER IF EXISTS count_update",
    "DROP TRIGGER IF EXISTS count_delete",
    "DROP TABLE IF EXISTS counts",
    "DROP INDEX IF EXISTS outbox_due",
)
_RECOUNT = (
    "INSERT INTO queue_counts (queue, state, n) "
    "SELECT queue, state, COUNT(*) FROM outbox GROUP BY queue, state"
)

# The ledger (outbox.py): bytes per queue and state, and of the dedupe records. Created
# after the `size` columns exist (a file from an older version gains them first).
_LEDGER = """
CREATE TRIGGER IF NOT EXISTS usage_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO usage (part, bytes) VALUES (NEW.queue || ':' || NEW.state, NEW.size)
    ON CONFLICT (part) DO UPDATE SET bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS usage_update AFTER UPDATE OF state, size ON outbox
WHEN OLD.state <> NEW.state OR OLD.size <> NEW.size BEGIN
    UPDATE usage SET bytes = bytes - OLD.size WHERE part = OLD.queue || ':' || OLD.state;
    INSERT INTO usage (part, bytes) VALUES (NEW.queue || ':' || NEW.state, NEW.size)
    ON CONFLICT (part) DO UPDATE SET bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS usage_delete AFTER DELETE ON outbox BEGIN
    UPDATE usage SET bytes = bytes - OLD.size WHERE part = OLD.queue || ':' || OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS dedupe_insert AFTER INSERT ON dedupe BEGIN
    UPDATE usage SET bytes = bytes + NEW.size WHERE part = 'dedupe';
END;
CREATE TRIGGER IF NOT EXISTS dedupe_update AFTER UPDATE OF size ON dedupe
WHEN OLD.size <> NEW.size BEGIN
    UPDATE usage SET bytes = bytes - OLD.size + NEW.size WHERE part = 'dedupe';
END;
CREATE TRIGGER IF NOT EXISTS dedupe_delete AFTER DELETE ON dedupe BEGIN
    UPDATE usage SET bytes = bytes - OLD.size WHERE part = 'dedupe';
END;
"""

# Column names in the f-strings below are constants; every value is bound.
_SELECT = (
    "SELECT o.id, b.body, o.state, o.accepted_at, o.queued_at, o.attempts, o.dispatch_id,"
    " o.reason, o.updated_at FROM outbox o JOIN bodies b ON b.id = o.id"
)

_CLAIM = (
    "UPDATE outbox SET owner = ?, lease_until = ?, updated_at = ? WHERE id IN ("
    " SELECT id FROM outbox WHERE queue = ? AND state = ? AND target = ? AND lease_until < ?"
    " AND due_at <= ? ORDER BY due_at LIMIT ?"
    ") RETURNING id"
)


def _statements(script: str) -> Iterator[str]:
    """The statements of `script`, one by one (a trigger's body holds semicolons)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


def _record(row: tuple, queue: Queue) -> Record:
    item_id, body, state, accepted_at, queued_at, attempts, dispatch_id, reason, updated = row
    return Record(
        id=item_id,
        item=queue.decode(body),
        state=state,
        accepted_at=accepted_at,
        queued_at=queued_at,
        attempts=attempts,
        dispatch_id=dispatch_id,
        reason=reason,
        updated_at=updated,
    )


def _begin_immediate(db: sqlite3.Connection, deadline: float) -> None:
    """Take the database's write lock, waiting for another process's transaction until
    `deadline` (time.monotonic).

    SQLite's own busy handler sleeps 1, 2, 5, ... up to 100 ms between tries, which adds
    tens of milliseconds to an accept whenever the deliverer or another worker writes;
    transactions here last about a millisecond, so try again sooner.
    """
    pause = 0.0002
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.005)


def _no_room(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@dataclass(slots=True, eq=False)
class _PendingAdd:
    """An `add` waiting for its group's commit; `outcome` is set by the group's leader."""

    item: Queued
    queue: Queue
    dedupe: Dedupe | None
    now: float
    max_waiting: int
    body: str = field(init=False)
    outcome: Accepted | Exception | None = None

    def __post_init__(self) -> None:
        self.body = self.item.to_json()


def new_id(queue: Queue) -> str:
    """Sortable by creation (nanoseconds, then random): items accepted in the same
    instant by the caller's clock still keep their order."""
    return f"{queue.id_prefix}_{time.time_ns():016x}{secrets.token_hex(6)}"


class Reserve:
    """Room on the data folder's disk kept for delivery: a file of `size` bytes, given
    back to the filesystem when a delivery write finds the disk full, made again once
    there is room. Shared by every worker of the instance through the file itself."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size

    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def keep(self) -> bool:
        """Hold the reserve (allocate the file's blocks); False if the disk has no room."""
        try:
            fd = open_private(self.path, os.O_RDWR)
        except OSError:
            return False
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError:
            os.ftruncate(fd, 0)  # what could be allocated goes back too
            return False
        finally:
            os.close(fd)
        return True

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class SqliteOutbox:
    def __init__(
        self,
        data_dir: str | Path,
        queue: Queue = TRIGGERS,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.queue = queue
        self.path = Path(data_dir) / FILE_NAME
        self.wal_path = Path(f"{self.path}-wal")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        private_database(self.path)  # Braze ids, emails, offers
        self.max_bytes = max_bytes
        self.wal_bytes = min(MAX_WAL_BYTES, max_bytes // SHARE_OF_BOUND)
        self.reserve = Reserve(
            self.path.parent / RESERVE_NAME, min(MAX_RESERVE_BYTES, max_bytes // SHARE_OF_BOUND)
        )
        # The log may pass `wal_bytes` by one transaction before it is cut back (a group
        # commit takes at most `wal_bytes` of items, the workers' far less), and by one more
        # while a reader's snapshot holds the checkpoint back (seen on a loaded machine).
        self.records_bytes = max_bytes - self.reserve.size - 3 * self.wal_bytes
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: list[_PendingAdd] = []
        self._pending_lock = threading.Lock()
        try:
            self._prepare(self._db())
        except sqlite3.Error as exc:
            raise OutboxError(f"the trigger store failed: {exc}") from None
        if not self.reserve.held() and not self.reserve.keep():
            log.warning(
                "no room on the disk of %s for the trigger outbox's reserve: new triggers "
                "are refused until there is",
                self.path.parent,
            )

    def _prepare(self, db: sqlite3.Connection) -> None:
        """The schema, in one transaction with bringing a file from an older version up to
        date (queues; bodies in a table of their own; the ledger, measured from the
        records), then incremental vacuum. Every worker opens the file at once at start-up:
        they wait for each other here."""
        db.execute(f"PRAGMA busy_timeout={START_TIMEOUT_MS}")
        _begin_immediate(db, time.monotonic() + START_TIMEOUT_MS / 1000)
        try:
            self._create(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # a file from before
            try:
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                db.execute("VACUUM")
            except sqlite3.Error as exc:  # busy, or no room for the copy: next start
                log.warning("the outbox could not be made to give space back: %s", exc)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        columns = {
            table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for table in ("outbox", "dedupe")
        }
        before_queues = bool(columns["outbox"]) and "queue" not in columns["outbox"]
        if before_queues:
            for statement in _BEFORE_QUEUES:
                db.execute(statement)
        for statement in _statements(_SCHEMA):
            db.execute(statement)
        if before_queues:
            db.execute(_RECOUNT)
        if "body" in columns["outbox"]:
            db.execute("INSERT INTO bodies (id, body) SELECT id, body FROM outbox")
            db.execute("ALTER TABLE outbox DROP COLUMN body")
        unsized = [table for table, names in columns.items() if names and "size" not in names]
        for table in unsized:
            db.execute(f"ALTER TABLE {table} ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
        db.execute("INSERT OR IGNORE INTO usage (part, bytes) VALUES (?, 0)", (DEDUPE_PART,))
        for statement in _statements(_LEDGER):
            db.execute(statement)
        # What an older version stored is measured once, and counted by the ledger's triggers.
        if "outbox" in unsized:
            db.create_function("cost", 1, COSTS.record, deterministic=True)
            db.execute(
                "UPDATE outbox SET size = (SELECT cost(body) FROM bodies WHERE id = outbox.id)"
            )
        if "dedupe" in unsized:
            db.execute("UPDATE dedupe SET size = ?", (COSTS.per_dedupe,))

    def for_queue(self, queue: Queue) -> SqliteOutbox:
        """This outbox seen through `queue`: the same file, connections, write turns, bound
        and reserve (closing either closes both)."""
        view = copy.copy(self)
        view.queue = queue
        return view

    # --- connections and transactions -----------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
            db.execute(f"PRAGMA busy_timeout={START_TIMEOUT_MS}")
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect in a new file only
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA journal_size_limit={self.wal_bytes}")
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA wal_autocheckpoint={max(16, self.wal_bytes // page_size)}")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.db, self._local.pid = db, os.getpid()
            with self._connections_lock:
                self._connections.append(db)
        return db

    def _turn(self, wait: float) -> None:
        """This process's turn to write. Threads queue here rather than in SQLite's busy
        handler, which sleeps and retries; other processes still meet that handler."""
        if not self._write_lock.acquire(timeout=wait):
            raise OutboxError("the trigger store is too busy")

    def _transaction(self, work: Callable[[sqlite3.Connection], T], deadline: float) -> T:
        """`work` in one write transaction, this process's turn already taken."""
        db = self._db()
        _begin_immediate(db, deadline)
        try:
            done = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT may have rolled back already
                db.execute("ROLLBACK")
            raise
        self._keep_log_short(db)
        return done

    def _keep_log_short(self, db: sqlite3.Connection) -> None:
        """Checkpoint a log grown past `wal_bytes`, waiting briefly for readers, so that
        the next write starts it again from its beginning (SQLite's own checkpoint after
        a commit never waits, and with readers always about it never catches up).

        After a commit: whatever happens here, the transaction stands (the next commit
        tries again)."""
        with contextlib.suppress(OSError, sqlite3.Error):
            if os.stat(self.wal_path).st_size > self.wal_bytes:
                db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """A write of the deliverer's or an operator's. One that finds the disk full takes
        the reserve and checkpoints the log, and is tried once more: what is stored must
        still be delivered (and recorded) when intake can no longer add to it."""
        self._turn(WRITE_WAIT)
        try:
            try:
                return self._transaction(work, time.monotonic() + WRITE_WAIT)
            except sqlite3.Error as exc:
                if not _no_room(exc):
                    raise
                self._make_room()
                return self._transaction(work, time.monotonic() + WRITE_WAIT)
        except sqlite3.Error as exc:
            raise OutboxError(f"the trigger store failed: {exc}") from None
        finally:
            self._write_lock.release()

    def _make_room(self) -> None:
        """The disk is full: give the reserve back to it, and let the log start again
        from its beginning (its file is reused rather than grown)."""
        if self.reserve.held():
            log.error(
                "the disk of %s is full: the trigger outbox uses its reserve to go on "
                "delivering; new triggers are refused until there is room",
                self.path.parent,
            )
        self.reserve.release()
        self._db().execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return query(self._db())
        except sqlite3.Error as exc:
            raise OutboxError(f"the trigger store failed: {exc}") from None

    def close(self) -> None:
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    # --- the disk ------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Bytes free for the service's user on the data folder's disk (the reserve not
        counted: it is held)."""
        found = os.statvfs(self.path.parent)
        return found.f_bavail * found.f_frsize

    def has_room(self, size: int) -> bool:
        """Whether the disk takes a trigger of `size` bytes (twice: in the log, then in the
        file) and still leaves the log its room and the reserve held, making the reserve
        again first if it was given back."""
        needed = 2 * size + self.wal_bytes
        if self.reserve.held():
            return self.free_bytes() >= needed
        if self.free_bytes() < needed + self.reserve.size:
            return False
        return self.reserve.keep() and self.free_bytes() >= needed

    def checks(self) -> dict[str, str]:
        """`disk`: `full` while intake refuses for want of room (delivery goes on)."""
        room = self.has_room(0)  # which makes the reserve again once there is room for it
        metrics.outbox_disk(str(self.path.parent), free_bytes=self.free_bytes(), full=not room)
        return {"disk": "ok" if room else "full"}

    # --- accepting ---------------------------------------------------------------

    def add(
        self, item: Queued, dedupe: Dedupe | None, *, now: float, max_waiting: int
    ) -> Accepted:
        """Group commit: whoever gets the write lock stores adds waiting for it (of any
        queue), in one transaction and one fsync, so concurrent requests share the cost of
        durability.

        An add that can't get its turn within ADD_WAIT answers at once: not stored if no
        group took it along yet, else OutcomeUnknown (its group is still committing)."""
        mine = _PendingAdd(item, self.queue, dedupe, now, max_waiting)
        try:
            room = self.has_room(COSTS.record(mine.body))
        except OSError as exc:
            raise OutboxError(f"the trigger store failed: {exc}") from None
        if not room:
            raise DiskFull(f"too little room on the disk of {self.path.parent}")
        deadline = time.monotonic() + ADD_WAIT
        with self._pending_lock:
            self._pending.append(mine)
        if not self._write_lock.acquire(timeout=ADD_WAIT):
            with self._pending_lock:
                if mine in self._pending:  # no group took it: nothing was stored
                    self._pending.remove(mine)
                    raise OutboxError("the trigger store is too busy")
            if mine.outcome is None:
                raise OutcomeUnknown()
        else:
            try:
                while mine.outcome is None:  # lead groups until one has taken it along
                    self._commit_group(self._next_group(), deadline)
            finally:
                self._write_lock.release()
        if isinstance(mine.outcome, Exception):
            raise mine.outcome
        assert mine.outcome is not None
        return mine.outcome

    def _next_group(self) -> list[_PendingAdd]:
        """The adds waiting longest, up to the log's size in bodies (at least one)."""
        with self._pending_lock:
            taken, size = 0, 0
            for pending in self._pending:
                size += len(pending.body)
                if taken and size > self.wal_bytes:
                    break
                taken += 1
            group = self._pending[:taken]
            del self._pending[:taken]  # in place: every queue's view shares the list
        return group

    def _commit_group(self, group: list[_PendingAdd], deadline: float) -> None:
        def store(db: sqlite3.Connection) -> list[Accepted | Exception]:
            self._expire_dedupes(db, group[0].now, EXPIRE_DEDUPES)
            return [self._add_one(db, pending) for pending in group]

        try:
            outcomes: list[Accepted | Exception] = self._transaction(store, deadline)
        except Exception as error:  # the whole group failed: none of it is stored
            if isinstance(error, sqlite3.Error) and _no_room(error):
                failure: Exception = DiskFull(f"the disk of {self.path.parent} is full")
            elif isinstance(error, sqlite3.Error):
                failure = OutboxError(f"the trigger store failed: {error}")
            else:
                failure = OutboxError(f"the trigger store failed: {type(error).__name__}")
            outcomes = [failure] * len(group)
        for pending, outcome in zip(group, outcomes, strict=True):
            pending.outcome = outcome

    def _add_one(self, db: sqlite3.Connection, pending: _PendingAdd) -> Accepted | Exception:
        dedupe, now, queue = pending.dedupe, pending.now, pending.queue
        key = f"{queue.dedupe_scope}{dedupe.key}" if dedupe is not None else ""
        if dedupe is not None:
            found = db.execute(
                "SELECT d.fingerprint, d.trigger_id, o.state FROM dedupe d "
                "LEFT JOIN outbox o ON o.id = d.trigger_id WHERE d.key = ? AND d.expires_at > ?",
                (key, now),
            ).fetchone()
            if found is not None:
                fingerprint, item_id, state = found
                if fingerprint != dedupe.fingerprint:
                    return DedupeConflict()
                return Accepted(item_id, state or PRUNED, created=False)
        (waiting,) = db.execute(
            "SELECT COALESCE(SUM(n), 0) FROM queue_counts WHERE queue = ? AND state IN (?, ?)",
            (queue.name, QUEUED, SENDING),
        ).fetchone()
        if waiting >= pending.max_waiting:
            return OutboxFull()
        size = COSTS.record(pending.body)
        needed = size + (COSTS.per_dedupe if dedupe is not None else 0)
        room = Room(
            dict(db.execute("SELECT part, bytes FROM usage").fetchall()), self.records_bytes
        )
        if not room.fits(needed):
            return OutboxFull()
        pruned = self._prune(db, room.to_prune(needed))
        item, item_id = pending.item, new_id(queue)
        db.execute(
            "INSERT INTO outbox (id, target, recipient, state, accepted_at, queued_at,"
            " due_at, updated_at, queue, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item_id, item.target, item.recipient_index, QUEUED, *(now,) * 4, queue.name, size),
        )
        db.execute("INSERT INTO bodies (id, body) VALUES (?, ?)", (item_id, pending.body))
        if dedupe is not None:
            db.execute(
                "INSERT INTO dedupe (key, fingerprint, trigger_id, expires_at, size) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, trigger_id = excluded.trigger_id, "
                "expires_at = excluded.expires_at, size = excluded.size",
                (key, dedupe.fingerprint, item_id, now + dedupe.window, COSTS.per_dedupe),
            )
        return Accepted(item_id, QUEUED, created=True, pruned=pruned)

    @staticmethod
    def _expire_dedupes(db: sqlite3.Connection, now: float, limit: int) -> int:
        return db.execute(
            "DELETE FROM dedupe WHERE key IN "
            "(SELECT key FROM dedupe WHERE expires_at <= ? LIMIT ?)",
            (now, limit),
        ).rowcount

    @staticmethod
    def _prune(db: sqlite3.Connection, excess: int) -> int:
        """Remove kept history of every queue, oldest first, until `excess` bytes are
        freed; how many items."""
        freed = removed = 0
        for state in PRUNABLE_STATES:
            while freed < excess:
                oldest = db.execute(
                    "SELECT id, size FROM outbox WHERE state = ? ORDER BY updated_at LIMIT 64",
                    (state,),
                ).fetchall()
                if not oldest:
                    break
                doomed = []
                for item_id, size in oldest:
                    doomed.append(item_id)
                    freed += size
                    if freed >= excess:
                        break
                marks = ", ".join("?" * len(doomed))
                db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", doomed)  # noqa: S608
                removed += len(doomed)
                if state == DEAD:
                    log.warning(
                        "pruned %d dead letters to make room for new items "
                        "(WALLET_PROXY_TRIGGER_MAX_BYTES)",
                        len(doomed),
                    )
        return removed

    # --- delivering --------------------------------------------------------------

    def claim(
        self, *, owner: str, now: float, window: float, lease: float, limit: int
    ) -> list[Record]:
        if not self._read(lambda db: self._anything_to_claim(db, now, window)):
            return []  # the common case when idle: no write lock taken, nothing to sync

        queue = self.queue.name

        def take(db: sqlite3.Connection) -> list[tuple]:
            self._settle_leases(db, now)
            first = db.execute(
                "SELECT target FROM outbox WHERE queue = ? AND state = ? AND lease_until < ? "
                "AND due_at <= ? ORDER BY due_at LIMIT 1",
                (queue, QUEUED, now, now - window),
            ).fetchone()
            if first is None:
                return []
            claimed = db.execute(
                _CLAIM,
                (owner, now + lease, now, queue, QUEUED, first[0], now, now, limit),
            ).fetchall()
            marks = ", ".join("?" * len(claimed))
            return db.execute(
                f"{_SELECT} WHERE o.id IN ({marks})",
                [row[0] for row in claimed],
            ).fetchall()

        rows = self._write(take)
        records = (_record(row, self.queue) for row in rows)
        return sorted(records, key=lambda r: (r.accepted_at, r.id))

    def _anything_to_claim(self, db: sqlite3.Connection, now: float, window: float) -> bool:
        ready = db.execute(
            "SELECT 1 FROM outbox WHERE queue = ? AND state = ? AND lease_until < ? "
            "AND due_at <= ? LIMIT 1",
            (self.queue.name, QUEUED, now, now - window),
        ).fetchone()
        expired = db.execute(
            "SELECT 1 FROM outbox WHERE state IN (?, ?) AND lease_until > 0 AND lease_until < ? "
            "AND queue = ? LIMIT 1",
            (QUEUED, SENDING, now, self.queue.name),
        ).fetchone()
        return ready is not None or expired is not None

    def abandon_leases(self, *, now: float) -> None:
        """Settle every claim of this queue now, as if its lease had ended.

        For the deliverer (or the queue's worker) that has just taken its instance lock: an
        SQLite outbox belongs to one instance, so any claim left in the queue is a dead
        predecessor's, and waiting out its lease would only delay the rest (and the report
        of what it left `sending`).
        """
        self._write(lambda db: self._settle_leases(db, now, until=float("inf")))

    def _settle_leases(
        self, db: sqlite3.Connection, now: float, until: float | None = None
    ) -> None:
        until = now if until is None else until
        db.execute(
            "UPDATE outbox SET owner = '', lease_until = 0 "
            "WHERE state = ? AND lease_until > 0 AND lease_until < ? AND queue = ?",
            (QUEUED, until, self.queue.name),
        )
        db.execute(
            "UPDATE outbox SET state = ?, reason = ?, lease_until = 0, updated_at = ? "
            "WHERE state = ? AND lease_until < ? AND queue = ?",
            (UNKNOWN, self.queue.stale_sending, now, SENDING, until, self.queue.name),
        )

    def move(
        self,
        move: str,
        ids: Sequence[str],
        *,
        now: float,
        owner: str = "",
        due_at: float | None = None,
        lease_until: float | None = None,
        reason: str | None = None,
        dispatch_id: str | None = None,
    ) -> list[str]:
        rule = MOVES[move]
        if not ids:
            return []
        changes = {"state": rule.target, "updated_at": now}
        if rule.target == QUEUED:
            changes.update(owner="", lease_until=0, due_at=due_at if due_at is not None else now)
            if not rule.owned:  # an operator's re-queue starts a new delivery
                changes.update(queued_at=now, attempts=0)
        elif rule.target == SENDING:
            changes["lease_until"] = lease_until if lease_until is not None else now
        else:
            changes["lease_until"] = 0
        if reason is not None:
            changes["reason"] = reason
        if dispatch_id is not None:
            changes["dispatch_id"] = dispatch_id
        assignments = ", ".join(f"{name} = ?" for name in changes)
        if rule.counts_attempt:
            assignments += ", attempts = attempts + 1"
        marks = ", ".join("?" * len(ids))
        sources = ", ".join("?" * len(rule.sources))
        where = f"id IN ({marks}) AND state IN ({sources}) AND queue = ?"
        params: list = [*changes.values(), *ids, *rule.sources, self.queue.name]
        if rule.owned:
            where += " AND owner = ?"
            params.append(owner)
        moved = self._write(
            lambda db: db.execute(
                f"UPDATE outbox SET {assignments} WHERE {where} RETURNING id",  # noqa: S608
                params,
            ).fetchall()
        )
        return [row[0] for row in moved]

    def take_broadcast_slot(self, *, now: float) -> float:
        def take(db: sqlite3.Connection) -> float:
            db.execute("DELETE FROM broadcasts WHERE at <= ?", (now - 60,))
            count, oldest = db.execute("SELECT COUNT(*), MIN(at) FROM broadcasts").fetchone()
            if count >= BROADCASTS_PER_MINUTE:
                return max(0.001, oldest + 60 - now)
            db.execute("INSERT INTO broadcasts (at) VALUES (?)", (now,))
            return 0.0

        return self._write(take)

    def purge(self, *, now: float) -> int:
        """Every queue's old items: they share the retention rules."""

        def forget(db: sqlite3.Connection) -> int:
            removed = db.execute(
                "DELETE FROM outbox WHERE (state = ? AND updated_at < ?) "
                "OR (state = ? AND updated_at < ?)",
                (SENT, now - SENT_RETENTION, DEAD, now - DEAD_RETENTION),
            ).rowcount
            db.execute("DELETE FROM dedupe WHERE expires_at <= ?", (now,))
            return removed

        removed = self._write(forget)
        self._give_back()
        return removed

    def _give_back(self) -> None:
        """Return free pages to the filesystem, a step at a time (each step's pages pass
        through the log); a busy database waits for the next purge."""
        while self._read(lambda db: db.execute("PRAGMA freelist_count").fetchone()[0]):
            self._turn(WRITE_WAIT)
            try:
                # executescript steps the pragma to its end (execute would free one page)
                self._db().executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP});")
            except sqlite3.Error as exc:
                log.info("the outbox gives space back later: %s", exc)
                return
            finally:
                self._write_lock.release()

    # --- reading -----------------------------------------------------------------

    def get(self, item_id: str) -> Record | None:
        row = self._read(
            lambda db: db.execute(
                f"{_SELECT} WHERE o.id = ? AND o.queue = ?", (item_id, self.queue.name)
            ).fetchone()
        )
        return _record(row, self.queue) if row else None

    def listed(self, state: str, *, limit: int) -> list[Record]:
        order = "updated_at DESC" if state in FINISHED else "accepted_at"
        rows = self._read(
            lambda db: db.execute(
                f"{_SELECT} WHERE o.queue = ? AND o.state = ? ORDER BY o.{order} LIMIT ?",
                (self.queue.name, state, limit),
            ).fetchall()
        )
        return [_record(row, self.queue) for row in rows]

    def recent(self, recipient: str, *, limit: int = 50) -> list[Record]:
        rows = self._read(
            lambda db: db.execute(
                f"{_SELECT} WHERE o.recipient = ? AND o.queue = ? "
                "ORDER BY o.accepted_at DESC LIMIT ?",
                (recipient, self.queue.name, limit),
            ).fetchall()
        )
        return [_record(row, self.queue) for row in rows]

    def usage(self) -> dict[str, int]:
        return dict(self._read(lambda db: db.execute("SELECT part, bytes FROM usage").fetchall()))

    def counts(self) -> dict[str, int]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT state, n FROM queue_counts WHERE queue = ?", (self.queue.name,)
            ).fetchall()
        )
        found = dict(rows)
        return {state: found.get(state, 0) for state in ALL_STATES}

    def oldest_queued(self) -> float | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT MIN(accepted_at) FROM outbox WHERE queue = ? AND state = ?",
                (self.queue.name, QUEUED),
            ).fetchone()
        )
        return row[0] if row else None
