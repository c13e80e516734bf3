"""One call per key at a time, shared by everyone who asks while it runs (Go's singleflight).

The first asker starts the work on a pool thread; later askers of the same key join it.
Each waits as long as it likes (the work itself may run on, so a slow answer still
lands for the next asker) and is woken the moment it ends. A failure is handed to every
waiter, never re-tried by each in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .background import Pool

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Flight(Generic[V]):
    """One run of the work for one key, and everyone waiting for it."""

    __slots__ = ("calling", "done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.calling = False  # set by the work once it has begun the call it exists for
        self.value: V | None = None
        self.error: Exception | None = None


class SingleFlight(Generic[K, V]):
    def __init__(self, pool: Pool):
        self.pool = pool
        self._flights: dict[K, Flight[V]] = {}
        self._lock = threading.Lock()

    def join(self, key: K, work: Callable[[Flight[V]], V]) -> Flight[V]:
        """The running flight for `key`, or a new one running `work(flight)` on the pool."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight
            flight = self._flights[key] = Flight()
        try:
            self.pool.submit(self._run, key, flight, work)
        except RuntimeError as error:  # the pool is shut: the app is closing
            self._end(key, flight, error=error)
        return flight

    def _run(self, key: K, flight: Flight[V], work: Callable[[Flight[V]], V]) -> None:
        try:
            value = work(flight)
        except Exception as error:
            self._end(key, flight, error=error)
        else:
            self._end(key, flight, value=value)

    def _end(
        self, key: K, flight: Flight[V], *, value: V | None = None, error: Exception | None = None
    ) -> None:
        flight.value, flight.error = value, error
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set()
