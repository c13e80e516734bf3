"""Guards around calls to SessionM: a concurrency cap and a circuit breaker, per process.

SessionM is a one-user API that partners say tops out near 100 requests per
second; Braze bursts far past that. The cap keeps our own calls bounded; the
breaker stops sending while SessionM is failing, answering fast instead (stale
copies, or 503 with Retry-After), and lets one probe through to find out when
it is back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from . import metrics
from .errors import (
    UpstreamBusy,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


def is_outage(error: UpstreamError) -> bool:
    """Failures that say SessionM is down or overloaded: not 404s, not bad payloads."""
    if isinstance(error, UpstreamBusy):
        return False  # our own refusal, not SessionM's failure
    return isinstance(error, UpstreamTimeout | UpstreamServerError | UpstreamUnavailable)


class CircuitBreaker:
    """Closed (calls go), open after `threshold` outages in a row (calls refused for
    `cooldown` seconds of `timer`, monotonic), then half-open (one probe decides)."""

    def __init__(
        self, *, threshold: int, cooldown: float, timer: Callable[[], float] = time.monotonic
    ):
        self.threshold = threshold
        self.cooldown = cooldown
        self.timer = timer
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            self._maybe_half_open()
            return self._state

    @property
    def failures(self) -> int:
        """Outages in a row so far; the breaker opens when they reach `threshold`."""
        with self._lock:
            return self._failures

    def _maybe_half_open(self) -> None:
        if self._state == OPEN and self.timer() >= self._opened_at + self.cooldown:
            self._state, self._probing = HALF_OPEN, False
            metrics.breaker_state(HALF_OPEN)

    def allow(self) -> bool:
        """May a call go now? While half-open, only one probe at a time."""
        with self._lock:
            self._maybe_half_open()
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def retry_after(self) -> int:
        with self._lock:
            left = self._opened_at + self.cooldown - self.timer()
        return max(1, math.ceil(left))

    def record(self, *, failed: bool) -> None:
        with self._lock:
            self._probing = False
            if not failed:
                self._state, self._failures = CLOSED, 0
                metrics.breaker_state(CLOSED)
                return
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self.threshold:
                self._state, self._opened_at = OPEN, self.timer()
                metrics.breaker_state(OPEN)


class UpstreamGuard:
    """Runs a SessionM call if a slot is free (waiting at most until a deadline) and the
    breaker allows it; feeds the outcome back to the breaker. Deadlines are instants
    of `timer`, the monotonic clock the caller's deadlines are measured by."""

    def __init__(
        self,
        *,
        concurrency: int,
        breaker: CircuitBreaker,
        timer: Callable[[], float] = time.monotonic,
    ):
        self.concurrency = concurrency
        self.breaker = breaker
        self.timer = timer
        self._slots = threading.BoundedSemaphore(concurrency)
        self._count_lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    def call(self, fn: Callable[[], T], *, wait_until: float | None, share: float = 1.0) -> T:
        """`wait_until`: a `timer()` instant to wait for a slot until; None: don't wait.
        `share` below 1: only while fewer than that share of the slots are taken (work
        that must leave room for renders)."""
        if share < 1 and self.in_flight >= self.concurrency * share:
            raise UpstreamBusy()
        timeout = 0.0 if wait_until is None else wait_until - self.timer()
        acquired = (
            self._slots.acquire(timeout=timeout) if timeout > 0 else self._slots.acquire(False)
        )
        if not acquired:
            raise UpstreamBusy()
        try:
            if not self.breaker.allow():
                raise UpstreamBusy(
                    "SessionM is failing; calls are paused briefly.",
                    retry_after=self.breaker.retry_after(),
                )
            with self._counted():
                try:
                    result = fn()
                except UpstreamError as error:
                    self.breaker.record(failed=is_outage(error))
                    raise
                except Exception:
                    self.breaker.record(failed=False)  # our bug, not SessionM's outage
                    raise
            self.breaker.record(failed=False)
            return result
        finally:
            self._slots.release()

    @contextmanager
    def _counted(self) -> Iterator[None]:
        with self._count_lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._count_lock:
                self.in_flight -= 1
