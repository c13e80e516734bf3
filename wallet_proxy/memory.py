"""What a worker holds at most, and the memory it gives back to the system.

The formula (`worker_peak_bytes`, docs/operations.md#memory): what a worker keeps of
wallets (the cache's bound), the wallets parsed at once and the answers rendered and sent,
each term bounded by a setting or by a count here; its factors were measured by
tests/test_memory_bounds.py.

Giving back (glibc only; elsewhere, musl or macOS, nothing is done).
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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from .background import Loop
from .config import Settings

# Wallets read from Redis and decoded at once in a process (cache.py), and answers rendered
# at once (answers.py). Both are CPU-bound: more threads would not finish sooner, only hold
# more wallets' JSON, or half-made answers, in memory together.
DECODES_AT_ONCE = 2
RENDERS_AT_ONCE = 2

# The memory formula's terms, measured (tests/test_memory_bounds.py, docs/operations.md):
MB = 1024 * 1024
WORKER_BASE = 50 * MB  # a worker once it has answered
MASTER = 32 * MB  # gunicorn's master process
# Memory a wallet takes while it is fetched and stored, per byte of SessionM's JSON: its
# objects and the page being read; with Redis, its JSON made or read as well.
PARSING = 2.5
PARSING_WITH_REDIS = 3.5
ALLOCATOR = 1.1  # a tenth more for the allocator's own

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


def worker_peak_bytes(settings: Settings) -> int:
    """The most a worker holds with these settings: what it keeps of wallets (the cache's
    bound), the wallets being fetched or read from Redis at once, and the answers being
    rendered and sent."""
    shared = settings.redis_url is not None
    parsing = settings.upstream_concurrency + (DECODES_AT_ONCE if shared else 0)
    per_wallet = PARSING_WITH_REDIS if shared else PARSING
    answers = (settings.threads + 2 * RENDERS_AT_ONCE) * settings.max_answer_bytes
    held = settings.cache_max_bytes + parsing * per_wallet * settings.max_wallet_bytes + answers
    return WORKER_BASE + int(ALLOCATOR * held)


def instance_peak_bytes(settings: Settings) -> int:
    """The same for an instance: gunicorn's master and WEB_CONCURRENCY workers."""
    return MASTER + settings.web_concurrency * worker_peak_bytes(settings)
