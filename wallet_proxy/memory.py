"""Memory a process gives back to the system once large wallets are let go (glibc only).

CPython hands a freed wallet's memory back to the C allocator, which keeps it for reuse:
glibc gives threads that contend arenas of their own (up to 8 per core) and returns
nothing from the middle of one. A worker's resident memory then stays near the peak of
every wallet it ever parsed at once, whatever its cache holds now: after 30 wallets of
19 MB, 16 at once, a worker held 104 MB of objects and 800 MB of memory. So:

- `limit_arenas`: at most two arenas (`M_ARENA_MAX`), set before the app's threads start;
- `Trimmer`: after a large wallet was stored (fetched, decoded, or pushing older ones
  out), `malloc_trim` returns the free pages of every arena. A loop of its own runs it
  a moment later, once the frames holding the wallet's JSON have returned, and at most
  once per moment however many wallets ask.

Elsewhere (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from .background import Loop

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2
LARGE = 1 << 20  # bytes of a stored wallet (Wallet.held_bytes) that ask for a trim
TRIM_DELAY = 0.5  # seconds between being asked and trimming
STOP_WAIT = 1.0


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


_LIBC = _glibc()


def limit_arenas() -> None:
    """At most ARENAS malloc arenas in this process, from now on."""
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, ARENAS)


class Trimmer:
    """Trims the C heap a moment after a large wallet asks (`stored`)."""

    def __init__(self) -> None:
        self._asked = threading.Event()
        self._loop = Loop("memory-trim", self._run, wake=self._asked.set)

    def stored(self, size: int) -> None:
        """A wallet of `size` bytes was just stored: trim soon if it is large."""
        if size >= LARGE and _LIBC is not None:
            self._asked.set()
            self._loop.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._asked.wait()
            if stop.wait(TRIM_DELAY):
                return
            self._asked.clear()
            assert _LIBC is not None  # the loop starts only with glibc
            _LIBC.malloc_trim(0)

    def close(self) -> None:
        self._loop.stop(STOP_WAIT)
