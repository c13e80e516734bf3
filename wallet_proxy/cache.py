"""Wallet caches behind one interface, `WalletCache`: per-process (cachetools) or shared (Redis).

An Entry holds what SessionM said (a Wallet, or None for "no such user") with
two instants: fresh until, then usable as stale until. Never a rendered answer:
expiry of offers is decided when each answer is made.

A process keeps wallets in one place, its `MemoryCache`, bounded in bytes: each entry's
size is measured once, when it is stored (`Wallet.held_bytes`), and the least recently
used go when a new one needs room. The Redis cache keeps there its local copy of every
entry this process writes or reads. A hit compares only the stamp at the head of the
Redis value with the local copy's: the wallet itself is read from Redis and decoded only
when this process has no copy of that version, by at most `DECODES_AT_ONCE` threads, so
neither hits nor a flood of large wallets read from Redis hold more than a few wallets'
JSON at once. While Redis is not asked (redis_clients.RedisHealth), entries come from
the local copies, so a wallet cached in Redis goes on being served, even as stale,
rather than fetched again while SessionM's budget may be short. Who fetches a missing
entry is decided elsewhere (coordination.py, wallet_service.py).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import redis
from cachetools import TLRUCache

from .memory import DECODES_AT_ONCE, Trimmer
from .redis_clients import RedisHealth
from .wallet import Wallet

log = logging.getLogger(__name__)

PREFIX = "wallet-proxy:v2"  # of every Redis name of the cache; bump when Entry's format changes
# What an entry takes besides its wallet: the key, the Entry, the cache's bookkeeping.
ENTRY_OVERHEAD = 1024
# A Redis value begins `{"k": "<stamp>"`: the stamp, fresh at each write, tells versions apart.
_STAMP_HEX = 16
HEAD_BYTES = len('{"k": ""') + _STAMP_HEX


class WalletKey(NamedTuple):
    """What a cached wallet depends on; Redis names are built from these parts, in order."""

    retailer_id: str
    culture: str
    user_id: str


def redis_name(kind: str, key: WalletKey, prefix: str = PREFIX) -> str:
    """The Redis name of one key's entry (`wallet`), lock (`lock`) or failure (`error`)."""
    return ":".join((prefix, kind, *key))


@dataclass(frozen=True, slots=True)
class Entry:
    wallet: Wallet | None  # None: SessionM said the user does not exist.
    fetched_at: float  # Unix time of SessionM's answer,
    fresh_until: float  # a plain HIT before this,
    stale_until: float  # a STALE answer (and a background refresh) before this.
    # Set when SessionM's answer was refused (a wallet too large): why, remembered until
    # `fresh_until` like a not-found. `wallet` is then the last good copy, if any, served
    # as stale meanwhile.
    refused: str | None = None

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def held_bytes(self) -> int:
        """What keeping it takes in memory (ENTRY_OVERHEAD and its wallet's objects)."""
        return ENTRY_OVERHEAD + (self.wallet.held_bytes() if self.wallet else 0)

    def dumps(self, stamp: str = "0" * _STAMP_HEX) -> bytes:
        """JSON whose first HEAD_BYTES hold `stamp` (16 hex digits)."""
        wallet = self.wallet.to_dict() if self.wallet else None
        data: dict[str, object] = {
            "k": stamp,  # first: a head of fixed length
            "w": wallet,
            "t": self.fetched_at,
            "f": self.fresh_until,
            "s": self.stale_until,
        }
        if self.refused is not None:
            data["r"] = self.refused
        return json.dumps(data).encode()

    @classmethod
    def loads(cls, text: bytes | str) -> Entry:
        data = json.loads(text)
        wallet = Wallet.from_dict(data["w"]) if data["w"] else None
        return cls(wallet, data["t"], data["f"], data["s"], data.get("r"))


class WalletCache(Protocol):
    """Entries by key."""

    def get(self, key: WalletKey) -> Entry | None: ...

    def put(self, key: WalletKey, entry: Entry) -> None: ...

    def status(self) -> dict[str, str]:
        """Checks for the readiness probe."""
        ...


class _Kept(NamedTuple):
    entry: Entry
    size: int  # Entry.held_bytes, measured when stored
    head: bytes | None  # the head of its Redis value (HEAD_BYTES), when it has one


class MemoryCache:
    """One process's entries, at most `max_bytes` of them (`Entry.held_bytes`), dropped when
    no longer usable or, to make room, least recently used first. Storing a large one asks
    `trimmer` to give freed memory back (memory.py)."""

    def __init__(
        self, *, max_bytes: int, unix_time: Callable[[], float], trimmer: Trimmer | None = None
    ):
        self.max_bytes = max_bytes
        self.trimmer = trimmer
        self._entries: TLRUCache[WalletKey, _Kept] = TLRUCache(
            maxsize=max_bytes,
            ttu=lambda _key, kept, _now: kept.entry.stale_until,
            timer=unix_time,
            getsizeof=lambda kept: kept.size,
        )
        self._lock = threading.Lock()  # cachetools caches are not thread-safe on their own.

    def get(self, key: WalletKey) -> Entry | None:
        kept = self.kept(key)
        return None if kept is None else kept.entry

    def kept(self, key: WalletKey) -> _Kept | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: WalletKey, entry: Entry, head: bytes | None = None) -> None:
        """Keep `entry` (and the head of its Redis value); one larger than the whole bound is
        not kept, and the older entry it replaces goes all the same."""
        kept = _Kept(entry, entry.held_bytes(), head)
        with self._lock:
            if kept.size > self.max_bytes:
                self._entries.pop(key, None)
            else:
                self._entries[key] = kept
        if self.trimmer is not None:
            self.trimmer.stored(kept.size)

    @property
    def held_bytes(self) -> int:
        """What the kept entries take now (at most `max_bytes`)."""
        with self._lock:
            return int(self._entries.currsize)

    def status(self) -> dict[str, str]:
        return {"cache": "ok"}


class RedisCache:
    """Entries in Redis, shared by every worker and instance, with a local copy of each
    (see the module docstring). `unix_time` is the app's clock."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        local: MemoryCache,
        health: RedisHealth,
        unix_time: Callable[[], float],
        prefix: str = PREFIX,
    ):
        self.client = client
        self.local = local
        self.health = health
        self.unix_time = unix_time
        self.prefix = prefix
        self._decoding = threading.BoundedSemaphore(DECODES_AT_ONCE)

    def get(self, key: WalletKey) -> Entry | None:
        if not self.health.usable():
            return self.local.get(key)
        name = redis_name("wallet", key, self.prefix)
        try:
            head = _bytes(self.client.getrange(name, 0, HEAD_BYTES - 1))
            if not head:
                self.health.succeeded()
                return None
            kept = self.local.kept(key)
            if kept is not None and kept.head == head:
                self.health.succeeded()
                return kept.entry
            with self._decoding:
                return self._read(key, name, head)
        except redis.RedisError as error:
            self.health.failed(error)
            return self.local.get(key)

    def _read(self, key: WalletKey, name: str, head: bytes) -> Entry | None:
        """The entry in Redis, decoded, and kept as the local copy. Another thread may have
        decoded this very version while this one waited for its turn."""
        kept = self.local.kept(key)
        if kept is not None and kept.head == head:
            return kept.entry
        found = self.client.get(name)
        self.health.succeeded()
        if found is None:
            return None
        raw = _bytes(found)
        try:
            entry = Entry.loads(raw)
        except (ValueError, KeyError, TypeError) as error:
            # Corrupt, or written by a release with another format: a miss, not a 500.
            log.warning("ignoring an unreadable cache entry (%s)", type(error).__name__)
            return None
        self.local.put(key, entry, raw[:HEAD_BYTES])
        return entry

    def put(self, key: WalletKey, entry: Entry) -> None:
        data = entry.dumps(secrets.token_hex(_STAMP_HEX // 2))
        self.local.put(key, entry, data[:HEAD_BYTES])  # a hit on it then decodes nothing
        if not self.health.usable():
            return
        ttl_ms = int((entry.stale_until - self.unix_time()) * 1000)
        if ttl_ms <= 0:
            return
        try:
            self.client.set(redis_name("wallet", key, self.prefix), data, px=ttl_ms)
        except redis.RedisError as error:
            self.health.failed(error)
            return
        self.health.succeeded()

    def status(self) -> dict[str, str]:
        try:
            self.client.ping()
        except redis.RedisError as error:
            self.health.failed(error)
            return {"cache": "ok", "redis": "unreachable: serving from the in-process cache"}
        self.health.succeeded()
        return {"cache": "ok", "redis": "ok"}


def _bytes(answer: bytes | str) -> bytes:
    """A Redis answer, which this client (no `decode_responses`) gives as bytes."""
    return answer if isinstance(answer, bytes) else answer.encode()
