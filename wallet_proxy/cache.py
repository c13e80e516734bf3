"""Wallet caches behind one interface, `WalletCache`: per-process (cachetools) or shared (Redis).

An Entry holds what SessionM said (a Wallet, or None for "no such user") with
two instants: fresh until, then usable as stale until. Never a rendered answer:
expiry of offers is decided when each answer is made.

The interface also coordinates the processes that share a cache (as dogpile's
`get_mutex` does): a lock so one of them fetches a key, a way to be woken when
it lands, and a short-lived error marker so a failure is handed to the others
instead of re-tried. The in-process cache has no other process to coordinate
with (the service's single-flight already holds per process), so its lock is
always granted. The Redis cache uses a lock with a lease, a pub/sub channel and
error keys. When Redis fails, it falls back to a per-process cache and reports
it; it tries Redis again after a second, so a dead Redis costs one timeout per
second, not one per request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import redis
from cachetools import LRUCache, TLRUCache

from . import metrics
from .wallet import Wallet

log = logging.getLogger(__name__)

REDIS_RETRY_INTERVAL = 1.0
# The lock token when no other process can be told: the caller fetches, guarded per process only.
ALONE = "alone"
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
"""


class WalletKey(NamedTuple):
    """What a cached wallet depends on; Redis names are built from these parts, in order."""

    retailer_id: str
    culture: str
    user_id: str


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
    """Entries by key, and the coordination between processes that share them.

    Every coordination method answers "can't" rather than raising when its
    store fails; the caller then acts alone, guarded per process.
    """

    def get(self, key: WalletKey) -> Entry | None: ...

    def put(self, key: WalletKey, entry: Entry) -> None: ...

    def status(self) -> dict[str, str]:
        """Checks for the readiness probe."""
        ...

    def lock(self, key: WalletKey, lease: float) -> str | None:
        """A token when this process may fetch `key` (`ALONE` if no other can be told);
        None while another process holds it, for at most `lease` seconds."""
        ...

    def is_locked(self, key: WalletKey) -> bool: ...

    def release(self, key: WalletKey, token: str) -> None:
        """Drop our lock and wake whoever waits on `key`."""
        ...

    def put_error(self, key: WalletKey, code: str, ttl: float) -> None:
        """Tell waiting processes, for `ttl` seconds, that fetching `key` failed with `code`."""
        ...

    def get_error(self, key: WalletKey) -> str | None: ...

    def waiting(self, key: WalletKey) -> AbstractContextManager[threading.Event]:
        """An event set when another process has fetched `key` (a safety net: poll too)."""
        ...


class MemoryCache:
    """One process's entries, dropped when no longer usable (or least recently used).

    Nothing to coordinate: the lock is always granted, nobody else marks errors
    or wakes waiters.
    """

    def __init__(self, *, maxsize: int, unix_time: Callable[[], float]):
        self._entries: TLRUCache[WalletKey, Entry] = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, entry, _now: entry.stale_until, timer=unix_time
        )
        self._lock = threading.Lock()  # cachetools caches are not thread-safe on their own.

    def get(self, key: WalletKey) -> Entry | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: WalletKey, entry: Entry) -> None:
        with self._lock:
            self._entries[key] = entry

    def status(self) -> dict[str, str]:
        return {"cache": "ok"}

    def lock(self, key: WalletKey, lease: float) -> str | None:
        return ALONE

    def is_locked(self, key: WalletKey) -> bool:
        return False

    def release(self, key: WalletKey, token: str) -> None:
        pass

    def put_error(self, key: WalletKey, code: str, ttl: float) -> None:
        pass

    def get_error(self, key: WalletKey) -> str | None:
        return None

    def waiting(self, key: WalletKey) -> AbstractContextManager[threading.Event]:
        return nullcontext(threading.Event())


class RedisCache:
    """Entries in Redis, shared by every worker and instance; see the module docstring.

    `unix_time` is the app's clock (entries' instants are Unix times); `timer`,
    monotonic, paces the retries while Redis is down.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        fallback: MemoryCache,
        unix_time: Callable[[], float],
        timer: Callable[[], float] = time.monotonic,
        prefix: str = "wallet-proxy:v1",  # bump when Entry's stored format changes
    ):
        self.client = client
        self.fallback = fallback
        self.unix_time = unix_time
        self.timer = timer
        self.prefix = prefix
        self.channel = f"{prefix}:done"
        self._down_until = 0.0
        # The last entry decoded per key: an unchanged value is not decoded again, and the
        # same Wallet object lets the answer memo serve shared-cache hits too.
        self._decoded: LRUCache[str, tuple[bytes | str, Entry]] = LRUCache(maxsize=4096)
        self._decoded_lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._waiters_lock = threading.Lock()
        self._listener: threading.Thread | None = None

    def _name(self, kind: str, key: WalletKey) -> str:
        return ":".join((self.prefix, kind, *key))

    @property
    def available(self) -> bool:
        return self.timer() >= self._down_until

    def _failed(self, error: Exception) -> None:
        metrics.redis_error()
        if self.available:
            log.warning("Redis unavailable (%s); using the in-process cache", type(error).__name__)
        self._down_until = self.timer() + REDIS_RETRY_INTERVAL

    def get(self, key: WalletKey) -> Entry | None:
        if self.available:
            name = self._name("wallet", key)
            try:
                raw = self.client.get(name)
            except redis.RedisError as error:
                self._failed(error)
                return self.fallback.get(key)
            if raw is None:
                return None
            with self._decoded_lock:
                known = self._decoded.get(name)
            if known is not None and known[0] == raw:
                return known[1]
            try:
                entry = Entry.loads(raw)
            except (ValueError, KeyError, TypeError) as error:
                # Corrupt, or written by a release with another format: a miss, not a 500.
                log.warning("ignoring an unreadable cache entry (%s)", type(error).__name__)
                return None
            with self._decoded_lock:
                self._decoded[name] = (raw, entry)
            return entry
        return self.fallback.get(key)

    def put(self, key: WalletKey, entry: Entry) -> None:
        self.fallback.put(key, entry)
        if not self.available:
            return
        ttl_ms = int((entry.stale_until - self.unix_time()) * 1000)
        if ttl_ms <= 0:
            return
        try:
            self.client.set(self._name("wallet", key), entry.dumps(), px=ttl_ms)
        except redis.RedisError as error:
            self._failed(error)

    def status(self) -> dict[str, str]:
        try:
            self.client.ping()
        except redis.RedisError as error:
            self._failed(error)
            return {"cache": "ok", "redis": "unreachable: serving from the in-process cache"}
        self._down_until = 0.0
        return {"cache": "ok", "redis": "ok"}

    # Coordination between processes. Every method answers "can't" when Redis fails,
    # and the caller then acts alone, guarded per process.

    def lock(self, key: WalletKey, lease: float) -> str | None:
        """A token when this process may fetch `key`; None when another one is."""
        if not self.available:
            return ALONE
        token = uuid.uuid4().hex
        try:
            taken = self.client.set(self._name("lock", key), token, nx=True, px=int(lease * 1000))
            if taken:
                # A new call begins: the previous one's failure no longer speaks for it.
                self.client.delete(self._name("error", key))
        except redis.RedisError as error:
            self._failed(error)
            return ALONE
        return token if taken else None

    def is_locked(self, key: WalletKey) -> bool:
        if not self.available:
            return False
        try:
            return bool(self.client.exists(self._name("lock", key)))
        except redis.RedisError as error:
            self._failed(error)
            return False

    def release(self, key: WalletKey, token: str) -> None:
        """Drop our lock (only ours: the lease may have passed to another) and wake waiters."""
        if token == ALONE:
            return
        # Tried even while Redis is marked down: a lock left behind would make the other
        # processes wait out its lease.
        try:
            self.client.eval(_RELEASE, 1, self._name("lock", key), token)
            self.client.publish(self.channel, self._name("wallet", key))
        except redis.RedisError as error:
            self._failed(error)

    def put_error(self, key: WalletKey, code: str, ttl: float) -> None:
        if not self.available:
            return
        try:
            self.client.set(self._name("error", key), code, px=max(1, int(ttl * 1000)))
        except redis.RedisError as error:
            self._failed(error)

    def get_error(self, key: WalletKey) -> str | None:
        if not self.available:
            return None
        try:
            code = self.client.get(self._name("error", key))
        except redis.RedisError as error:
            self._failed(error)
            return None
        if not code:
            return None
        return code.decode() if isinstance(code, bytes) else code

    @contextmanager
    def waiting(self, key: WalletKey) -> Iterator[threading.Event]:
        """An event set when another process publishes that `key` was fetched."""
        self._ensure_listener()
        name, event = self._name("wallet", key), threading.Event()
        with self._waiters_lock:
            self._waiters.setdefault(name, set()).add(event)
        try:
            yield event
        finally:
            with self._waiters_lock:
                events = self._waiters.get(name, set())
                events.discard(event)
                if not events:
                    self._waiters.pop(name, None)

    def _ensure_listener(self) -> None:
        # Started on first use, in the serving process: threads don't survive a fork.
        if self._listener is None or not self._listener.is_alive():
            with self._waiters_lock:
                if self._listener is None or not self._listener.is_alive():
                    self._listener = threading.Thread(
                        target=self._listen, name="wallet-proxy-redis-listener", daemon=True
                    )
                    self._listener.start()

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    with self._waiters_lock:
                        events = list(self._waiters.get(message["data"].decode(), ()))
                    for event in events:
                        event.set()
            except redis.RedisError as error:
                # Waiters poll meanwhile; resubscribe once Redis is back.
                log.debug("Redis listener reconnecting after %s", type(error).__name__)
                time.sleep(0.2)
