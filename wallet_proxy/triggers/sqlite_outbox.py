"""The outbox in SQLite, for one instance: a file in WALLET_PROXY_DATA_DIR.

WAL mode with `synchronous=FULL`: a commit is on disk before `add` returns, so a 202
means the trigger survives a kill -9 or a power cut. Concurrent adds in one process share
a transaction and its fsync (group commit). Each thread has its own connection; writers
take the lock up front (BEGIN IMMEDIATE) so two transactions never deadlock upgrading a
read lock. Counts per queue and state are kept by SQL triggers in the same
transactions, so the bound check is one row read rather than a count of 100,000 rows.

Every queue of the outbox (outbox.Queue) is in the same table, told apart by `queue`, so
they share the file, its write lock and its group commits. A file written before queues
existed (its rows are all triggers) is brought up to date when it is opened.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..files import private_database
from .model import DEAD, QUEUED, SENDING, SENT, UNKNOWN, Record
from .outbox import (
    ALL_STATES,
    BROADCASTS_PER_MINUTE,
    DEAD_RETENTION,
    FINISHED,
    MOVES,
    SENT_RETENTION,
    TRIGGERS,
    Accepted,
    Dedupe,
    DedupeConflict,
    OutboxError,
    OutboxFull,
    Queue,
    Queued,
)

T = TypeVar("T")

FILE_NAME = "triggers.sqlite3"
BUSY_TIMEOUT_MS = 50  # for statements inside a transaction; BEGIN waits in _begin_immediate
START_TIMEOUT_MS = 10_000
WRITE_WAIT = 10.0  # seconds a thread waits for this process's turn to write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    recipient TEXT,
    body TEXT NOT NULL,
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
    queue TEXT NOT NULL DEFAULT 'triggers'
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (queue, state, due_at);
CREATE INDEX IF NOT EXISTS outbox_target ON outbox (state, target, due_at);
CREATE INDEX IF NOT EXISTS outbox_lease ON outbox (state, lease_until);
CREATE INDEX IF NOT EXISTS outbox_updated ON outbox (state, updated_at);
CREATE INDEX IF NOT EXISTS outbox_recipient ON outbox (recipient, accepted_at);
CREATE TABLE IF NOT EXISTS dedupe (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dedupe_expiry ON dedupe (expires_at);
CREATE TABLE IF NOT EXISTS queue_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
);
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

_COLUMNS = "id, body, state, accepted_at, queued_at, attempts, dispatch_id, reason, updated_at"


# Column names in these f-strings are constants; every value is bound.
_CLAIM = (
    "UPDATE outbox SET owner = ?, lease_until = ?, updated_at = ? WHERE id IN ("  # noqa: S608
    " SELECT id FROM outbox WHERE queue = ? AND state = ? AND target = ? AND lease_until < ?"
    " AND due_at <= ? ORDER BY due_at LIMIT ?"
    f") RETURNING {_COLUMNS}"
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
    trigger_id, body, state, accepted_at, queued_at, attempts, dispatch_id, reason, updated = row
    return Record(
        id=trigger_id,
        item=queue.decode(body),
        state=state,
        accepted_at=accepted_at,
        queued_at=queued_at,
        attempts=attempts,
        dispatch_id=dispatch_id,
        reason=reason,
        updated_at=updated,
    )


def _begin_immediate(db: sqlite3.Connection) -> None:
    """Take the database's write lock, waiting for another process's transaction.

    SQLite's own busy handler sleeps 1, 2, 5, ... up to 100 ms between tries, which adds
    tens of milliseconds to an accept whenever the deliverer or another worker writes;
    transactions here last about a millisecond, so try again sooner.
    """
    deadline = time.monotonic() + WRITE_WAIT
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


@dataclass(slots=True)
class _PendingAdd:
    """An `add` waiting for its group's commit; `outcome` is set by the group's leader."""

    item: Queued
    queue: Queue
    dedupe: Dedupe | None
    now: float
    max_waiting: int
    outcome: Accepted | Exception | None = None


def new_id(queue: Queue) -> str:
    """Sortable by creation (nanoseconds, then random): items accepted in the same
    instant by the caller's clock still keep their order."""
    return f"{queue.id_prefix}_{time.time_ns():016x}{secrets.token_hex(6)}"


class SqliteOutbox:
    def __init__(self, data_dir: str | Path, queue: Queue = TRIGGERS):
        self.queue = queue
        self.path = Path(data_dir) / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        private_database(self.path)  # Braze ids, emails, offers
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: list[_PendingAdd] = []
        self._pending_lock = threading.Lock()
        try:
            db = self._db()
            # Every worker opens the file at once at start-up: wait for each other here.
            db.execute(f"PRAGMA busy_timeout={START_TIMEOUT_MS}")
            _begin_immediate(db)
            try:
                self._create(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise OutboxError(f"the trigger store failed: {exc}") from None

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        """The schema, in one transaction with bringing a file from before queues up to date."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
        before_queues = bool(columns) and "queue" not in columns
        if before_queues:
            for statement in _BEFORE_QUEUES:
                db.execute(statement)
        for statement in _statements(_SCHEMA):
            db.execute(statement)
        if before_queues:
            db.execute(_RECOUNT)

    def for_queue(self, queue: Queue) -> SqliteOutbox:
        """This outbox seen through `queue`: the same file, connections and write turns
        (closing either closes both)."""
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
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.db, self._local.pid = db, os.getpid()
            with self._connections_lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """This process's turn to write. Threads queue here rather than in SQLite's busy
        handler, which sleeps and retries; other processes still meet that handler."""
        if not self._write_lock.acquire(timeout=WRITE_WAIT):
            raise OutboxError("the trigger store is too busy")
        try:
            yield
        finally:
            self._write_lock.release()

    @contextmanager
    def _write(self, *, locked: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; `locked`: the caller already holds `_writing`."""
        with contextlib.ExitStack() as turn:
            if not locked:
                turn.enter_context(self._writing())
            try:
                db = self._db()
                _begin_immediate(db)
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise OutboxError(f"the trigger store failed: {exc}") from None

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

    # --- accepting ---------------------------------------------------------------

    def add(
        self, item: Queued, dedupe: Dedupe | None, *, now: float, max_waiting: int
    ) -> Accepted:
        """Group commit: whoever gets the write lock stores every add waiting for it (of any
        queue), in one transaction and one fsync, so concurrent requests share the cost of
        durability."""
        mine = _PendingAdd(item, self.queue, dedupe, now, max_waiting)
        with self._pending_lock:
            self._pending.append(mine)
        with self._writing():
            if mine.outcome is None:  # nobody took it along: lead this group
                with self._pending_lock:  # in place: every queue's view shares the list
                    group = self._pending[:]
                    self._pending.clear()
                try:
                    with self._write(locked=True) as db:
                        for pending in group:
                            pending.outcome = self._add_one(db, pending)
                except Exception as error:  # the whole group failed: none of it is stored
                    failure = (
                        error
                        if isinstance(error, OutboxError)
                        else OutboxError(f"the trigger store failed: {type(error).__name__}")
                    )
                    for pending in group:
                        pending.outcome = failure
        if isinstance(mine.outcome, Exception):
            raise mine.outcome
        assert mine.outcome is not None
        return mine.outcome

    @staticmethod
    def _add_one(db: sqlite3.Connection, pending: _PendingAdd) -> Accepted | Exception:
        dedupe, now, queue = pending.dedupe, pending.now, pending.queue
        key = f"{queue.dedupe_scope}{dedupe.key}" if dedupe is not None else ""
        if dedupe is not None:
            found = db.execute(
                "SELECT d.fingerprint, d.trigger_id, o.state FROM dedupe d "
                "LEFT JOIN outbox o ON o.id = d.trigger_id WHERE d.key = ? AND d.expires_at > ?",
                (key, now),
            ).fetchone()
            if found is not None:
                fingerprint, trigger_id, state = found
                if fingerprint != dedupe.fingerprint:
                    return DedupeConflict()
                return Accepted(trigger_id, state or SENT, created=False)
        (waiting,) = db.execute(
            "SELECT COALESCE(SUM(n), 0) FROM queue_counts WHERE queue = ? AND state IN (?, ?)",
            (queue.name, QUEUED, SENDING),
        ).fetchone()
        if waiting >= pending.max_waiting:
            return OutboxFull()
        item, trigger_id = pending.item, new_id(queue)
        db.execute(
            "INSERT INTO outbox (id, target, recipient, body, state, accepted_at, queued_at,"
            " due_at, updated_at, queue) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (trigger_id, item.target, item.recipient_index, item.to_json(), QUEUED)
            + (now,) * 4
            + (queue.name,),
        )
        if dedupe is not None:
            db.execute(
                "INSERT OR REPLACE INTO dedupe (key, fingerprint, trigger_id, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (key, dedupe.fingerprint, trigger_id, now + dedupe.window),
            )
        return Accepted(trigger_id, QUEUED, created=True)

    # --- delivering --------------------------------------------------------------

    def claim(
        self, *, owner: str, now: float, window: float, lease: float, limit: int
    ) -> list[Record]:
        if not self._read(lambda db: self._anything_to_claim(db, now, window)):
            return []  # the common case when idle: no write lock taken, nothing to sync
        queue = self.queue.name
        with self._write() as db:
            self._settle_leases(db, now)
            first = db.execute(
                "SELECT target FROM outbox WHERE queue = ? AND state = ? AND lease_until < ? "
                "AND due_at <= ? ORDER BY due_at LIMIT 1",
                (queue, QUEUED, now, now - window),
            ).fetchone()
            if first is None:
                return []
            rows = db.execute(
                _CLAIM,
                (owner, now + lease, now, queue, QUEUED, first[0], now, now, limit),
            ).fetchall()
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
        with self._write() as db:
            self._settle_leases(db, now, until=float("inf"))

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
        with self._write() as db:
            moved = db.execute(
                f"UPDATE outbox SET {assignments} WHERE {where} RETURNING id",  # noqa: S608
                params,
            ).fetchall()
        return [row[0] for row in moved]

    def take_broadcast_slot(self, *, now: float) -> float:
        with self._write() as db:
            db.execute("DELETE FROM broadcasts WHERE at <= ?", (now - 60,))
            count, oldest = db.execute("SELECT COUNT(*), MIN(at) FROM broadcasts").fetchone()
            if count >= BROADCASTS_PER_MINUTE:
                return max(0.001, oldest + 60 - now)
            db.execute("INSERT INTO broadcasts (at) VALUES (?)", (now,))
            return 0.0

    def purge(self, *, now: float) -> int:
        """Every queue's old items: they share the retention rules."""
        with self._write() as db:
            removed = db.execute(
                "DELETE FROM outbox WHERE (state = ? AND updated_at < ?) "
                "OR (state = ? AND updated_at < ?)",
                (SENT, now - SENT_RETENTION, DEAD, now - DEAD_RETENTION),
            ).rowcount
            db.execute("DELETE FROM dedupe WHERE expires_at <= ?", (now,))
        return removed

    # --- reading -----------------------------------------------------------------

    def get(self, trigger_id: str) -> Record | None:
        row = self._read(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE id = ? AND queue = ?",  # noqa: S608
                (trigger_id, self.queue.name),
            ).fetchone()
        )
        return _record(row, self.queue) if row else None

    def listed(self, state: str, *, limit: int) -> list[Record]:
        order = "updated_at DESC" if state in FINISHED else "accepted_at"
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE queue = ? AND state = ? "  # noqa: S608
                f"ORDER BY {order} LIMIT ?",
                (self.queue.name, state, limit),
            ).fetchall()
        )
        return [_record(row, self.queue) for row in rows]

    def recent(self, recipient: str, *, limit: int = 50) -> list[Record]:
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE recipient = ? "  # noqa: S608
                "AND queue = ? ORDER BY accepted_at DESC LIMIT ?",
                (recipient, self.queue.name, limit),
            ).fetchall()
        )
        return [_record(row, self.queue) for row in rows]

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
