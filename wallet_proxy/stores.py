"""Small records every worker shares: Redis when configured, else a SQLite file.

Staff sessions (which ones are still signed in), the per-customer history of staff
actions, the failed logins counted against password guessing and the Idempotency-Key
records of the tags relay must be the same in every gunicorn worker and survive a
restart, which per-process memory is not. `SharedStore` is what they need: values that
expire (set, or added only where none is), counters that expire, and short logs that
keep the newest few items for a while. Redis holds them when the service has it (every
instance sees them); otherwise a SQLite file in WALLET_PROXY_DATA_DIR does (every worker
of one instance sees it), one file per use.

A failing store raises `StoreUnavailable`: callers decide whether that blocks
(a session that can't be checked is not trusted) or not (history is a nicety).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import redis

from .config import ConfigError
from .errors import StoreUnavailable
from .files import private_database

if TYPE_CHECKING:
    from .config import Settings

DATABASE = "support.sqlite3"  # the support pages' file; other uses name their own
PREFIX = "wallet-proxy:support"  # the same, for Redis names
# Seconds a writer waits for another process's write to finish before giving up.
SQLITE_BUSY_TIMEOUT = 2.0


class SharedStore(Protocol):
    """Expiring values and short, newest-first logs, shared by every worker."""

    def put(self, key: str, value: str, *, ttl: float) -> None: ...

    def get(self, key: str) -> str | None: ...

    def add(self, key: str, value: str, *, ttl: float) -> str | None:
        """Store `value` unless `key` holds one already: None once stored, else the value
        that is there (one step: of two workers adding at once, one wins)."""
        ...

    def delete(self, key: str) -> None:
        """Delete the value or counter at `key`."""
        ...

    def delete_if(self, key: str, value: str) -> None:
        """Delete `key` only while it still holds `value`."""
        ...

    def count(self, key: str, *, ttl: float) -> int:
        """One more in the counter at `key`, which lasts `ttl` seconds from its last count;
        the count now."""
        ...

    def counted(self, key: str) -> tuple[int, float]:
        """The counter at `key` and the seconds it has left; (0, 0.0) when there is none."""
        ...

    def append(self, key: str, item: str, *, keep: int, ttl: float) -> None:
        """Add `item` to the log at `key`; keep its newest `keep` items of the last `ttl` s."""
        ...

    def recent(self, key: str, *, ttl: float) -> list[str]:
        """The log's items from the last `ttl` seconds, newest first."""
        ...


_ADD = """
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisSharedStore:
    """Values and counters are strings with an expiry; logs are sorted sets scored by time."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        unix_time: Callable[[], float],
        prefix: str = PREFIX,
    ):
        self.client = client
        self.unix_time = unix_time
        self.prefix = prefix
        self._add = client.register_script(_ADD)
        self._delete_if = client.register_script(_DELETE_IF)

    def _name(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def put(self, key: str, value: str, *, ttl: float) -> None:
        with _redis_errors():
            self.client.set(self._name(key), value, px=_milliseconds(ttl))

    def get(self, key: str) -> str | None:
        with _redis_errors():
            value = self.client.get(self._name(key))
        return None if value is None else _text(value)

    def add(self, key: str, value: str, *, ttl: float) -> str | None:
        with _redis_errors():
            found = self._add(keys=[self._name(key)], args=[value, _milliseconds(ttl)])
        return None if found is None else _text(found)

    def delete(self, key: str) -> None:
        with _redis_errors():
            self.client.delete(self._name(key))

    def delete_if(self, key: str, value: str) -> None:
        with _redis_errors():
            self._delete_if(keys=[self._name(key)], args=[value])

    def count(self, key: str, *, ttl: float) -> int:
        with _redis_errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(self._name(key))
            pipe.pexpire(self._name(key), _milliseconds(ttl))
            count, _ = pipe.execute()
        return int(count)

    def counted(self, key: str) -> tuple[int, float]:
        with _redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self._name(key))
            pipe.pttl(self._name(key))
            count, left = pipe.execute()
        if count is None:
            return 0, 0.0
        return int(count), max(left, 0) / 1000  # 0: it expires within the millisecond

    def append(self, key: str, item: str, *, keep: int, ttl: float) -> None:
        now, name = self.unix_time(), self._name(key)
        # A random prefix keeps equal items distinct members of the set.
        member = f"{secrets.token_hex(4)} {item}"
        with _redis_errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.zadd(name, {member: now})
            pipe.zremrangebyscore(name, "-inf", f"({now - ttl}")
            pipe.zremrangebyrank(name, 0, -keep - 1)
            pipe.expire(name, max(1, int(ttl)))
            pipe.execute()

    def recent(self, key: str, *, ttl: float) -> list[str]:
        with _redis_errors():
            members = self.client.zrevrangebyscore(self._name(key), "+inf", self.unix_time() - ttl)
        return [_text(member).partition(" ")[2] for member in members]


def _milliseconds(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError:
        raise StoreUnavailable() from None


class SqliteSharedStore:
    """One SQLite file in the data folder, in WAL mode so readers never wait for writers.

    A connection per call: cheap for SQLite, safe across gunicorn's fork and threads.
    """

    def __init__(self, path: Path, *, unix_time: Callable[[], float]):
        self.path = path
        self.unix_time = unix_time
        private_database(path)  # staff names and the customers they opened
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS value (
                    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL
                );
                CREATE TABLE IF NOT EXISTS counter (
                    key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL
                );
                CREATE TABLE IF NOT EXISTS log (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    key TEXT NOT NULL, item TEXT NOT NULL, at REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS log_by_key ON log (key, at);
                CREATE INDEX IF NOT EXISTS log_by_age ON log (at);
                CREATE INDEX IF NOT EXISTS value_by_expiry ON value (expires);
                CREATE INDEX IF NOT EXISTS counter_by_expiry ON counter (expires);
                """
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error:
            raise StoreUnavailable() from None
        try:
            with db:  # one transaction for the whole call
                yield db
        except sqlite3.Error:
            raise StoreUnavailable() from None
        finally:
            db.close()

    def put(self, key: str, value: str, *, ttl: float) -> None:
        now = self.unix_time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM value WHERE expires <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO value (key, value, expires) VALUES (?, ?, ?)",
                (key, value, now + ttl),
            )
            db.execute("COMMIT")

    def get(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT value FROM value WHERE key = ? AND expires > ?", (key, self.unix_time())
            ).fetchone()
        return row[0] if row else None

    def add(self, key: str, value: str, *, ttl: float) -> str | None:
        now = self.unix_time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM value WHERE expires <= ?", (now,))
            found = db.execute("SELECT value FROM value WHERE key = ?", (key,)).fetchone()
            if found is None:
                db.execute(
                    "INSERT INTO value (key, value, expires) VALUES (?, ?, ?)",
                    (key, value, now + ttl),
                )
            db.execute("COMMIT")
        return None if found is None else found[0]

    def delete(self, key: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM value WHERE key = ?", (key,))
            db.execute("DELETE FROM counter WHERE key = ?", (key,))

    def delete_if(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM value WHERE key = ? AND value = ?", (key, value))

    def count(self, key: str, *, ttl: float) -> int:
        now = self.unix_time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM counter WHERE expires <= ?", (now,))
            db.execute(
                "INSERT INTO counter (key, count, expires) VALUES (?, 1, ?) "
                "ON CONFLICT (key) DO UPDATE SET count = count + 1, expires = excluded.expires",
                (key, now + ttl),
            )
            (count,) = db.execute("SELECT count FROM counter WHERE key = ?", (key,)).fetchone()
            db.execute("COMMIT")
        return int(count)

    def counted(self, key: str) -> tuple[int, float]:
        now = self.unix_time()
        with self._connect() as db:
            row = db.execute(
                "SELECT count, expires FROM counter WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
        return (0, 0.0) if row is None else (int(row[0]), row[1] - now)

    def append(self, key: str, item: str, *, keep: int, ttl: float) -> None:
        now = self.unix_time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO log (key, item, at) VALUES (?, ?, ?)", (key, item, now))
            # Every key's old items go, not only this one's: nothing outlives `ttl`.
            db.execute("DELETE FROM log WHERE at < ?", (now - ttl,))
            db.execute(
                "DELETE FROM log WHERE key = ? AND id NOT IN "
                "(SELECT id FROM log WHERE key = ? ORDER BY at DESC, id DESC LIMIT ?)",
                (key, key, keep),
            )
            db.execute("COMMIT")

    def recent(self, key: str, *, ttl: float) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT item FROM log WHERE key = ? AND at >= ? ORDER BY at DESC, id DESC",
                (key, self.unix_time() - ttl),
            ).fetchall()
        return [row[0] for row in rows]


def shared_store(
    settings: Settings,
    client: redis.Redis | None,
    unix_time: Callable[[], float],
    *,
    database: str = DATABASE,
    prefix: str = PREFIX,
) -> SharedStore:
    """Redis when the service has it (names under `prefix`), else the data folder's SQLite
    file `database` (created here)."""
    if client is not None:
        return RedisSharedStore(client, unix_time=unix_time, prefix=prefix)
    folder = Path(settings.data_dir)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError
        return SqliteSharedStore(folder / database, unix_time=unix_time)
    except (OSError, StoreUnavailable):
        raise ConfigError(
            "WALLET_PROXY_DATA_DIR", "can't create or write the folder (or its SQLite file)"
        ) from None
