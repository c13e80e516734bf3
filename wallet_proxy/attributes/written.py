"""What was last written to each Braze profile: its loyalty attributes, when, and by what.

Kept so that a write carries only what changed (values.changed), and so that the support
pages can show a customer's attributes as Braze got them. Redis when the service has one
(the sync, the deliverer and every instance share it), else a SQLite file in the data
folder (the sync and the service of one host). Entries are keyed by the Braze user
(`BrazeUser.index`) and found again by SessionM user id for the support pages.

An entry lasts KEEP after its last write, so the store can't grow without bound: a
profile not written for that long gets every attribute again on its next write, which
also puts right one changed in Braze by other means.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from ..braze_users import BrazeUser
from ..files import private_database

KEEP = 35 * 86_400.0
DATABASE = "attributes.sqlite3"
SQLITE_BUSY_TIMEOUT = 2.0
SYNC, TRIGGER = "sync", "trigger"  # what wrote an entry


class WrittenStoreError(Exception):
    """The store could not be read or written (Redis or the SQLite file failed)."""


@dataclass(frozen=True, slots=True)
class Written:
    """A profile's loyalty attributes as Braze holds them after the last write."""

    user: BrazeUser
    sessionm_user_id: str
    attributes: dict[str, Any]
    at: float  # Unix time of the write Braze took
    by: str  # SYNC or TRIGGER

    def to_json(self) -> str:
        return json.dumps(
            {
                "user": self.user.stored(),
                "sessionm_user_id": self.sessionm_user_id,
                "attributes": self.attributes,
                "at": self.at,
                "by": self.by,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Written:
        fields = json.loads(text)
        return cls(
            BrazeUser.from_stored(fields["user"]),
            fields["sessionm_user_id"],
            fields["attributes"],
            fields["at"],
            fields["by"],
        )


class WrittenStore(Protocol):
    def get(self, user: BrazeUser) -> Written | None:
        """The last write Braze took for `user`, if kept."""
        ...

    def latest_for(self, sessionm_user_id: str) -> Written | None:
        """The newest write for any profile of this SessionM customer, if kept."""
        ...

    def put_many(self, writes: Sequence[Written]) -> None:
        """Record writes Braze took, all or none."""
        ...


class RedisWritten:
    """A JSON string per profile, and per SessionM customer the index of its newest one."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        unix_time: Callable[[], float],
        prefix: str = "wallet-proxy:attributes",
    ):
        self.client = client
        self.unix_time = unix_time
        self.prefix = prefix

    def _user_key(self, index: str) -> str:
        return f"{self.prefix}:user:{index}"

    def get(self, user: BrazeUser) -> Written | None:
        return self._entry(self._user_key(user.index))

    def latest_for(self, sessionm_user_id: str) -> Written | None:
        with _redis_errors():
            index = self.client.get(f"{self.prefix}:sessionm:{sessionm_user_id}")
        if index is None:
            return None
        text = index.decode() if isinstance(index, bytes) else str(index)
        return self._entry(self._user_key(text))

    def _entry(self, key: str) -> Written | None:
        with _redis_errors():
            value = self.client.get(key)
        return None if value is None else Written.from_json(value)

    def put_many(self, writes: Sequence[Written]) -> None:
        keep = int(KEEP)
        with _redis_errors():
            pipe = self.client.pipeline(transaction=True)
            for write in writes:
                index = write.user.index
                pipe.set(self._user_key(index), write.to_json(), ex=keep)
                pipe.set(f"{self.prefix}:sessionm:{write.sessionm_user_id}", index, ex=keep)
            pipe.execute()


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as error:
        raise WrittenStoreError(type(error).__name__) from None


class SqliteWritten:
    """One row per profile in the data folder's attributes.sqlite3 (WAL: readers never wait
    for the sync's writes). A connection per call: safe across threads and forks."""

    def __init__(self, path: Path, *, unix_time: Callable[[], float]):
        self.path = path
        self.unix_time = unix_time
        private_database(path)  # customer ids and their points
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS written (
                    user TEXT PRIMARY KEY,
                    sessionm_user_id TEXT NOT NULL,
                    entry TEXT NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS written_by_customer ON written (sessionm_user_id, at);
                CREATE INDEX IF NOT EXISTS written_by_age ON written (at);
                """
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as error:
            raise WrittenStoreError(str(error)) from None
        try:
            with db:
                yield db
        except sqlite3.Error as error:
            raise WrittenStoreError(str(error)) from None
        finally:
            db.close()

    def get(self, user: BrazeUser) -> Written | None:
        return self._one("WHERE user = ? AND at > ?", (user.index,))

    def latest_for(self, sessionm_user_id: str) -> Written | None:
        return self._one(
            "WHERE sessionm_user_id = ? AND at > ? ORDER BY at DESC LIMIT 1", (sessionm_user_id,)
        )

    def _one(self, where: str, args: tuple) -> Written | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT entry FROM written {where}",  # noqa: S608 - our own constant clauses
                (*args, self.unix_time() - KEEP),
            ).fetchone()
        return Written.from_json(row[0]) if row else None

    def put_many(self, writes: Sequence[Written]) -> None:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM written WHERE at <= ?", (self.unix_time() - KEEP,))
            db.executemany(
                "INSERT OR REPLACE INTO written (user, sessionm_user_id, entry, at) "
                "VALUES (?, ?, ?, ?)",
                [(w.user.index, w.sessionm_user_id, w.to_json(), w.at) for w in writes],
            )
            db.execute("COMMIT")


def written_store(
    client: redis.Redis | None, data_dir: str, unix_time: Callable[[], float]
) -> WrittenStore:
    """Redis when there is one, else the data folder's SQLite file (created here). Raises
    WrittenStoreError when the file can't be made."""
    if client is not None:
        return RedisWritten(client, unix_time=unix_time)
    folder = Path(data_dir)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SqliteWritten(folder / DATABASE, unix_time=unix_time)
    except OSError as error:
        raise WrittenStoreError(error.strerror or str(error)) from None
