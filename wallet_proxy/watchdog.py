"""One wall-clock deadline per HTTP call, headers and body included.

requests' and urllib3's timeouts bound each socket operation, so a server that
sends one byte a second never trips them and holds the call (and its slot) as
long as it likes. Here each call runs under a `Watch`; the pooled connection the
call uses belongs to that watch from the moment the call connects or sends on it
until it goes back to the pool, and one watchdog thread per process shuts that
connection's socket down when the deadline passes. The blocked read returns at
once, the caller sees `watch.expired`, and the connection is closed rather than
pooled.

Ownership ends when the connection is returned to the pool, not when the call
returns, so a deadline that passes after a call has ended can't cut the next
call that reuses the connection.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

from .background import Loop

# Watches and the connections they own change together, under this one lock.
_lock = threading.Lock()
_current = threading.local()  # `.watch`: the Watch of the call this thread is making


class Watch:
    """One call's deadline (an instant of the watchdog's timer) and what it owns."""

    __slots__ = ("_connection", "_ended", "deadline", "expired")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.expired = False
        self._ended = False
        self._connection: _Owned | None = None

    def _expire(self) -> None:
        with _lock:
            if self._ended:
                return
            self.expired = True
            if self._connection is not None and self._connection.watch is self:
                self._connection.cut()

    def _end(self) -> None:
        with _lock:
            self._ended = True
            if self._connection is not None and self._connection.watch is self:
                self._connection.watch = None
            self._connection = None


class _Owned:
    """What a watched connection adds to urllib3's: the watch it belongs to, and `cut`."""

    watch: Watch | None = None
    was_cut = False

    def claim(self) -> None:
        """Belong to the watch of the call this thread is making (or to none); refuse to
        go on once that watch has expired, which it may have while we were connecting."""
        watch = getattr(_current, "watch", None)
        with _lock:
            self.watch = watch
            if watch is None:
                return
            watch._connection = self
            expired = watch.expired
        if expired:
            raise TimeoutError("the call's deadline has passed")

    def disown(self) -> None:
        with _lock:
            self.watch = None

    def cut(self) -> None:
        """Shut the socket down (called with `_lock` held): a blocked read returns now."""
        self.was_cut = True
        sock = getattr(self, "sock", None)
        if isinstance(sock, socket.socket):
            # socket.socket's own shutdown, also for an SSLSocket: it leaves the TLS
            # object to the reading thread, which then sees the end of the stream.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedHTTPConnection(_Owned, HTTPConnection):
    def connect(self) -> None:
        self.claim()
        super().connect()
        self.claim()  # the deadline may have passed before there was a socket to cut

    def request(self, *args: Any, **kwargs: Any) -> None:
        self.claim()
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_Owned, HTTPSConnection):
    def connect(self) -> None:
        self.claim()
        super().connect()
        self.claim()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self.claim()
        super().request(*args, **kwargs)


def _returned(connection: Any) -> None:
    """A connection back in the pool belongs to no call; one that was cut is closed."""
    if isinstance(connection, _Owned):
        connection.disown()
        if connection.was_cut:
            connection.was_cut = False
            connection.close()  # type: ignore[attr-defined]


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        _returned(conn)
        super()._put_conn(conn)


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _put_conn(self, conn: Any) -> None:
        _returned(conn)
        super()._put_conn(conn)


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {
    "http": _WatchedHTTPPool,
    "https": _WatchedHTTPSPool,
}


class WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct or through an HTTP proxy) can be cut
    by a `Watchdog`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not SOCKS, whose pools are its own
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class Watchdog:
    """Cuts the connection of every watched call still running at its deadline.

    One loop (background.Loop), started on first use in each process, sleeps until the
    next deadline.
    """

    def __init__(self, timer: Callable[[], float] = time.monotonic):
        self.timer = timer
        self._queue: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._loop = Loop("wallet-proxy-watchdog", self._run, wake=self._wake)

    @contextlib.contextmanager
    def watch(self, deadline: float) -> Iterator[Watch]:
        """Watch the HTTP call this thread makes inside the block; `deadline` is a
        `timer()` instant. The watch ends with the block."""
        watch = Watch(deadline)
        self._schedule(watch)
        outer = getattr(_current, "watch", None)
        _current.watch = watch
        try:
            yield watch
        finally:
            _current.watch = outer
            watch._end()

    def _schedule(self, watch: Watch) -> None:
        with self._changed:
            if not self._loop.running:
                self._queue.clear()  # a parent process's calls, if this is a forked child
                self._loop.start()
            heapq.heappush(self._queue, (watch.deadline, next(self._order), watch))
            if self._queue[0][2] is watch:
                self._changed.notify()

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _run(self, stop: threading.Event) -> None:
        while True:
            with self._changed:
                if stop.is_set():  # checked under the lock `_wake` takes: no lost wake-up
                    return
                if not self._queue:
                    self._changed.wait()
                    continue
                deadline, _, watch = self._queue[0]
                left = deadline - self.timer()
                if left > 0:
                    self._changed.wait(left)
                    continue
                heapq.heappop(self._queue)
            watch._expire()  # a watch that already ended does nothing

    def stop(self, timeout: float) -> bool:
        return self._loop.stop(timeout)


@functools.cache
def process_watchdog() -> Watchdog:
    """The watchdog every SessionM client of this process shares."""
    return Watchdog()
