"""Every thread the service starts: long-lived loops (`Loop`) and named pools (`Pool`).

A gunicorn worker is a fork of the master, and threads don't survive a fork: a loop
or a pool started before it would be dead in the child while its objects still say
otherwise. One at-fork hook here forgets every loop's and pool's threads in the
child, so each starts afresh in whichever process first uses it, and asking a loop
to run stays an attribute check on the request path. Both can be stopped, which is
how an app's `close` (container.py) and a worker's exit end them instead of leaving
daemon threads behind.

Thread names say what a thread does, never whom for: a name reaches the logs when
its thread raises, and user ids are never logged in the clear.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Loop:
    """One daemon thread running `body(stop)` until `stop` is set.

    `body` must return soon after `stop` is set: it waits on `stop` (or on something
    `wake` interrupts) rather than sleeping.
    """

    def __init__(
        self,
        name: str,
        body: Callable[[threading.Event], None],
        *,
        wake: Callable[[], None] | None = None,
    ):
        self.name = name
        self._body = body
        self._wake = wake
        self._forget()
        _everything.add(self)

    def _forget(self) -> None:
        """No thread (a new object, or the child of a fork, where the thread is gone)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Loop:
        """Run the loop in this process unless it was started already (an attribute check).

        Raises RuntimeError when no thread can be started; the loop then counts as `ended`.
        """
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._stop = threading.Event()
                    thread = threading.Thread(
                        target=self._body, args=(self._stop,), name=self.name, daemon=True
                    )
                    try:
                        thread.start()
                    finally:  # a thread that could not start leaves the loop `ended`
                        self._thread = thread
        return self

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def ended(self) -> bool:
        """Started in this process and over without `stop`: its body raised or returned, or
        its thread could not start. It is not started again."""
        thread = self._thread
        return thread is not None and not thread.is_alive()

    def stop(self, timeout: float) -> bool:
        """Ask the loop to end and wait up to `timeout` seconds; whether it has ended.
        A stopped loop may be started again."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if self._wake is not None:
            self._wake()
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()


class Pool:
    """A thread pool with a name, its threads started in the process that submits work."""

    def __init__(
        self, name: str, max_workers: int, *, initializer: Callable[[], None] | None = None
    ):
        self.name = name
        self.max_workers = max_workers
        self._initializer = initializer
        self._closed = False
        self._forget()
        _everything.add(self)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run `fn` on one of the pool's threads; RuntimeError once the pool is shut."""
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"the {self.name} pool is shut")
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.max_workers,
                        thread_name_prefix=self.name,
                        initializer=self._initializer,
                    )
                executor = self._executor
        return executor.submit(fn, *args, **kwargs)

    def shutdown(self, *, wait: bool = False) -> None:
        """Refuse new work and drop what has not started; `wait` for what has."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)


_everything: weakref.WeakSet[Loop | Pool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for owner in list(_everything):
        owner._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
