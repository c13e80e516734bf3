"""Wallet caches behind one interface, `WalletCache`: per-process (cachetools) or shared (Redis).

An Entry holds what SessionM said (a Wallet, or None for "no such user") with
two instants: fresh until, then usable as stale until. Never a rendered answer:
expiry of offers is decided when each answer is made.

The Redis cache keeps a local copy of every entry this process writes or reads, in a
`MemoryCache`: while Redis is not asked (redis_clients.RedisHealth), entries come from
there, so a wallet cached in Redis goes on being served, even as stale, rather than
fetched again while SessionM's budget may be short. Who fetches a missing entry is
decided elsewhere (coordination.py, wallet_service.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import redis
from cachetools import TLRUCache

from .redis_clients import RedisHealth
from .wallet import Wallet

log = logging.getLogger(__name__)

PREFIX = "wallet-proxy:v1"  # of every Redis name of the cache; bump when Entry's format changes


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

    def dumps(self) -> str:
        wallet = self.wallet.to_dict() if self.wallet else None
        data: dict[str, object] = {
            "w": wallet,
            "t": self.fetched_at,
            "f": self.fresh_until,
            "s": self.stale_until,
        }
        if self.refused is not None:
            data["r"] = self.refused
        return json.dumps(data)

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
    raw: bytes | str | None  # what Redis held, when the entry was read from there


class MemoryCache:
    """One process's entries, dropped when no longer usable (or least recently used)."""

    def __init__(self, *, maxsize: int, unix_time: Callable[[], float]):
        self._entries: TLRUCache[WalletKey, _Kept] = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, kept, _now: kept.entry.stale_until, timer=unix_time
        )
        self._lock = threading.Lock()  # cachetools caches are not thread-safe on their own.

    def get(self, key: WalletKey) -> Entry | None:
        with self._lock:
            kept = self._entries.get(key)
        return None if kept is None else kept.entry

    def put(self, key: WalletKey, entry: Entry, raw: bytes | str | None = None) -> None:
        with self._lock:
            self._entries[key] = _Kept(entry, raw)

    def read_before(self, key: WalletKey, raw: bytes | str) -> Entry | None:
        """The entry already decoded from exactly `raw`, if it is kept: not decoded again,
        and the same Wallet object lets the answer memo serve shared-cache hits too."""
        with self._lock:
            kept = self._entries.get(key)
        return kept.entry if kept is not None and kept.raw == raw else None

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

    def get(self, key: WalletKey) -> Entry | None:
        if not self.health.usable():
            return self.local.get(key)
        try:
            raw = self.client.get(redis_name("wallet", key, self.prefix))
        except redis.RedisError as error:
            self.health.failed(error)
            return self.local.get(key)
        self.health.succeeded()
        if raw is None:
            return None
        known = self.local.read_before(key, raw)
        if known is not None:
            return known
        try:
            entry = Entry.loads(raw)
        except (ValueError, KeyError, TypeError) as error:
            # Corrupt, or written by a release with another format: a miss, not a 500.
            log.warning("ignoring an unreadable cache entry (%s)", type(error).__name__)
            return None
        self.local.put(key, entry, raw)
        return entry

    def put(self, key: WalletKey, entry: Entry) -> None:
        data = entry.dumps().encode()
        self.local.put(key, entry, data)  # so reading it back from Redis decodes nothing
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
