"""Running bulk work: rate limit, backoff pause, progress line, parallel workers, signals."""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import wait as wait_for
from typing import Protocol, TextIO

from ..background import Pool
from ..errors import (
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

MAX_ATTEMPTS = 6
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# Transient failures worth another try: rate limits, 5xx, unreachable, timeouts.
TRANSIENT = (UpstreamServerError, UpstreamUnavailable, UpstreamTimeout)


class RateLimiter:
    """Call starts at least 1/`rate` apart, never a burst.

    A start is claimed when it happens, not booked ahead: a thread that wakes late can't
    leave a gap that the next ones then fill at once.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Block until this caller may start; False if `stop` was set meanwhile."""
        while not stop.is_set():
            with self._lock:
                now = self.clock()
                if now >= self._next:
                    self._next = now + self.interval
                    return True
                delay = self._next - now
            stop.wait(delay)
        return False

    def hold(self, seconds: float) -> None:
        """Nobody starts a call for `seconds` (SessionM asked us to wait)."""
        with self._lock:
            self._next = max(self._next, self.clock() + seconds)


class Refusal(Protocol):
    """A failure that may say how long to wait: SessionM's (WalletProxyError) or Braze's."""

    @property
    def retry_after(self) -> float | None: ...


def pause_before_retry(
    error: Refusal, attempt: int, limiter: RateLimiter, stop: threading.Event
) -> bool:
    """Exponential backoff with jitter, at least the Retry-After the failure carries (which
    then holds every worker, not just this one). False if stopped while waiting."""
    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
    if error.retry_after:
        delay = max(delay, float(error.retry_after))
        limiter.hold(delay)
    return not stop.wait(delay)


class Progress:
    """One line on stderr: redrawn in place on a terminal, printed every few seconds in logs."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.2 if self.tty else 5.0
        self.clock = clock
        self.started = self._drawn = clock()
        self.done = 0
        self._lock = threading.Lock()

    def advance(self) -> None:
        with self._lock:
            self.done += 1
            now = self.clock()
            if now - self._drawn >= self.every:
                self._drawn = now
                self._draw(now)

    def close(self) -> None:
        if not self.total:
            return
        with self._lock:
            self._draw(self.clock())
            if self.tty:
                self.stream.write("\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = _clock_time(left / rate) if rate > 0 else "--:--"
        percent = 100 * self.done // self.total if self.total else 100
        text = f"{self.label}: {self.done}/{self.total} ({percent}%) {rate:.1f}/s ETA {eta}"
        if self.tty:
            filled = 24 * self.done // self.total if self.total else 24
            text = f"[{'#' * filled}{'.' * (24 - filled)}] {text}"
        return text

    def _draw(self, now: float) -> None:
        if self.tty:
            self.stream.write(f"\r{self.line(now)}\x1b[K")
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run_parallel(
    items: Iterable, handle: Callable, concurrency: int, stop: threading.Event
) -> None:
    """`handle(item)` for each item on `concurrency` threads, until done or `stop` is set;
    `items` is read as the threads ask, so it may be read from disk as it goes.

    Ctrl-C and SIGTERM set `stop`: calls in flight finish and are journaled, so an
    interrupted run leaves nothing in doubt.
    """
    queue = iter(items)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while not stop.is_set():
            with lock:
                item = next(queue, None)
            if item is None:
                return
            try:
                handle(item)
            except BaseException as exc:  # a bug: stop everyone, report it in the main thread
                failures.append(exc)
                stop.set()

    pool = Pool("bulk", concurrency)
    with _stop_on_signals(stop):
        workers = [pool.submit(work) for _ in range(concurrency)]
        # In short waits, so that this (main) thread can run the signal handlers.
        while wait_for(workers, timeout=0.2).not_done:
            pass
    pool.shutdown()
    if failures:
        raise failures[0]


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
