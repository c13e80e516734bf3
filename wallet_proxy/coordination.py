"""Which process fetches a missing wallet, when several share one cache (as dogpile's
`get_mutex` does): a lock per key, a way to be woken when the holder's answer lands, and
a short-lived marker so a failure is handed to the others instead of re-tried by each.

`Alone` is for a process with its own cache: there is nobody to coordinate with (the
wallet service's single flight already holds in the process), so its lock is always
granted. `RedisCoordination` uses a lock with a lease, a pub/sub channel and error keys.
It answers "can't" rather than raising when Redis fails, and the caller then acts
alone, guarded per process.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import redis

from .background import Loop
from .cache import PREFIX, WalletKey, redis_name
from .errors import UpstreamTimeout, upstream_error_named
from .redis_clients import RedisHealth

log = logging.getLogger(__name__)

T = TypeVar("T")

ALONE = "alone"  # the lock token when no other process can be told
POLL_INTERVAL = 0.25  # a safety net under pub/sub wake-ups, bounded by the caller's instant
LISTENER_STOP_WAIT = 2.0
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
"""


class Coordination(Protocol):
    def lock(self, key: WalletKey, lease: float) -> str | None:
        """A token when this process may fetch `key` (`ALONE` if no other can be told);
        None while another process holds it, for at most `lease` seconds."""
        ...

    def release(self, key: WalletKey, token: str) -> None:
        """Drop our lock and wake whoever waits on `key`."""
        ...

    def put_error(self, key: WalletKey, name: str, ttl: float) -> None:
        """Tell waiting processes, for `ttl` seconds, that fetching `key` failed with the
        error class `name`."""
        ...

    def await_holder(
        self, key: WalletKey, landed: Callable[[], T | None], until: float
    ) -> T | None:
        """What the lock's holder stored (`landed()`, once not None), its failure raised,
        or None when it let go without either (its lease ran out, or Redis failed): then
        the caller may fetch. `until` is a `time.monotonic()` instant (UpstreamTimeout)."""
        ...

    def close(self) -> None: ...


class Alone:
    """One process: its lock is always granted, nobody else marks errors or wakes waiters."""

    def lock(self, key: WalletKey, lease: float) -> str | None:
        return ALONE

    def release(self, key: WalletKey, token: str) -> None:
        pass

    def put_error(self, key: WalletKey, name: str, ttl: float) -> None:
        pass

    def await_holder(
        self, key: WalletKey, landed: Callable[[], T | None], until: float
    ) -> T | None:
        return landed()

    def close(self) -> None:
        pass


class RedisCoordination:
    """Locks with a lease, error markers and a pub/sub channel of fetched keys, in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        health: RedisHealth,
        timer: Callable[[], float] = time.monotonic,
        prefix: str = PREFIX,
    ):
        self.client = client
        self.health = health
        self.timer = timer
        self.prefix = prefix
        self.channel = f"{prefix}:done"
        self._waiters: dict[str, set[threading.Event]] = {}
        self._waiters_lock = threading.Lock()
        self._listener = Loop(
            "wallet-proxy-redis-listener",
            functools.partial(_listen, weakref.ref(self), client, self.channel),
        )

    def _name(self, kind: str, key: WalletKey) -> str:
        return redis_name(kind, key, self.prefix)

    def lock(self, key: WalletKey, lease: float) -> str | None:
        if not self.health.usable():
            return ALONE
        token = uuid.uuid4().hex
        try:
            taken = self.client.set(self._name("lock", key), token, nx=True, px=int(lease * 1000))
            if taken:
                # A new call begins: the previous one's failure no longer speaks for it.
                self.client.delete(self._name("error", key))
        except redis.RedisError as error:
            self.health.failed(error)
            return ALONE
        return token if taken else None

    def _is_locked(self, key: WalletKey) -> bool:
        if not self.health.usable():
            return False
        try:
            return bool(self.client.exists(self._name("lock", key)))
        except redis.RedisError as error:
            self.health.failed(error)
            return False

    def release(self, key: WalletKey, token: str) -> None:
        """Drop our lock (only ours: the lease may have passed to another) and wake waiters."""
        if token == ALONE:
            return
        # Tried even while Redis is not asked otherwise: a lock left behind would make the
        # other processes wait out its lease.
        try:
            self.client.eval(_RELEASE, 1, self._name("lock", key), token)
            self.client.publish(self.channel, self._name("wallet", key))
        except redis.RedisError as error:
            self.health.failed(error)

    def put_error(self, key: WalletKey, name: str, ttl: float) -> None:
        if not self.health.usable():
            return
        try:
            self.client.set(self._name("error", key), name, px=max(1, int(ttl * 1000)))
        except redis.RedisError as error:
            self.health.failed(error)

    def error(self, key: WalletKey) -> str | None:
        """The name of the failure marked for `key`, if any."""
        if not self.health.usable():
            return None
        try:
            name = self.client.get(self._name("error", key))
        except redis.RedisError as error:
            self.health.failed(error)
            return None
        if not name:
            return None
        return name.decode() if isinstance(name, bytes) else name

    def await_holder(
        self, key: WalletKey, landed: Callable[[], T | None], until: float
    ) -> T | None:
        with self._woken(key) as woken:
            while True:
                # Lock first, then entry: the holder stores before it unlocks, so an
                # unlocked key read here has its entry visible below.
                locked = self._is_locked(key)
                value = landed()
                if value is not None:
                    return value
                name = self.error(key)
                if name is not None:
                    raise upstream_error_named(name)
                if not locked:
                    return None
                remaining = until - self.timer()
                if remaining <= 0:
                    raise UpstreamTimeout()
                woken.wait(min(remaining, POLL_INTERVAL))
                woken.clear()

    @contextmanager
    def _woken(self, key: WalletKey) -> Iterator[threading.Event]:
        """An event set when another process publishes that `key` was fetched."""
        self._listener.start()
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

    def wake(self, name: str) -> None:
        with self._waiters_lock:
            events = list(self._waiters.get(name, ()))
        for event in events:
            event.set()

    def close(self) -> None:
        self._listener.stop(LISTENER_STOP_WAIT)


def _listen(
    coordination_ref: weakref.ref[RedisCoordination],
    client: redis.Redis,
    channel: str,
    stop: threading.Event,
) -> None:
    """Wake the waiters of each fetched key, until stopped or the coordination is gone."""
    while not stop.is_set():
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(channel)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    coordination = coordination_ref()
                    if coordination is None:
                        return
                    if message is not None:
                        coordination.wake(message["data"].decode())
                    del coordination
            finally:
                pubsub.close()
        except redis.RedisError as error:
            # Waiters poll meanwhile; subscribe again once Redis is back.
            log.debug("Redis listener reconnecting after %s", type(error).__name__)
            stop.wait(0.2)
