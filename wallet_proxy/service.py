"""Getting a wallet for a user: fresh from cache, else one SessionM call shared by all askers.

The one entry point every consumer shares (API, support pages, warm-up), so they
all see the same cache and the same rules:

- fresh entry: answer at once (HIT);
- stale entry: answer at once (STALE) and refresh it in the background;
- nothing usable: join the one flight for that key (single-flight), started by
  whoever asked first; every asker is woken the moment it lands and waits at
  most until its own deadline, then gets a stale copy or the error. A failure
  is handed to every waiter, never re-tried by each in turn.

Flights run in their own thread so an answer's deadline holds whatever SessionM
does; the flight itself may run on (to WALLET_PROXY_UPSTREAM_TIMEOUT) so a slow
answer still fills the cache for Braze's next render. With a shared cache the
flight first takes that key's lock in Redis, so one process fetches and the
others wait for its result.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from . import errors
from .cache import Entry, MemoryCache, RedisCache
from .errors import UpstreamBusy, UpstreamError, UpstreamTimeout, UserNotFound, WalletProxyError
from .sessionm import ConnectClient
from .upstream import UpstreamGuard
from .wallet import Wallet

log = logging.getLogger(__name__)

HIT, MISS, STALE = "HIT", "MISS", "STALE"

# Stop waiting this much before the deadline (at most a tenth of it), so the answer is
# rendered and written by then, also when many waiters wake at once on a busy machine.
SEND_MARGIN = 0.1
JITTER = 0.1  # fresh lifetimes vary by up to 10 %, so a campaign's users don't expire together
ERROR_TTL = 1.0  # seconds a failure stays visible to other processes waiting on the same key
POLL_INTERVAL = 0.25  # safety net under pub/sub wake-ups, bounded by the deadline anyway

# Errors crossing processes travel as class names.
_ERRORS_BY_NAME = {
    cls.__name__: cls
    for cls in (
        errors.UpstreamError,
        errors.InvalidUpstreamPayload,
        errors.UpstreamServerError,
        errors.UpstreamUnavailable,
        errors.UpstreamRateLimited,
        errors.UpstreamBusy,
        errors.UpstreamTimeout,
    )
}


@dataclass(frozen=True, slots=True)
class Lookup:
    """A wallet and how it was obtained (the X-Cache value)."""

    wallet: Wallet
    cache: str  # HIT, MISS or STALE

    @property
    def stale(self) -> bool:
        return self.cache == STALE

    def age(self, now: datetime) -> int:
        return max(0, int((now - self.wallet.fetched_at).total_seconds()))


class _Flight:
    """One fetch of one key, and everyone waiting for it."""

    __slots__ = ("calling", "done", "entry", "error")

    def __init__(self):
        self.done = threading.Event()
        self.calling = False  # set once a slot is ours and the call to SessionM has begun
        self.entry: Entry | None = None
        self.error: WalletProxyError | None = None

    def timed_out(self) -> WalletProxyError:
        # Still queued for a slot means we are busy (503, retry soon), not SessionM slow.
        if self.calling:
            return UpstreamTimeout()
        return UpstreamBusy()


class WalletService:
    def __init__(
        self,
        *,
        client: ConnectClient,
        cache: MemoryCache | RedisCache,
        guard: UpstreamGuard,
        retailer_id: str,
        deadline: float,
        upstream_timeout: float,
        cache_ttl: float,
        stale_ttl: float,
        negative_ttl: float,
        clock: Callable[[], datetime],
        rng: Callable[[], float] = random.random,
    ):
        self.client = client
        self.cache = cache
        self.guard = guard
        self.retailer_id = retailer_id
        self.deadline = deadline
        self.upstream_timeout = upstream_timeout
        self.cache_ttl = cache_ttl
        self.stale_ttl = stale_ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.rng = rng
        self._flights: dict[tuple[str, str, str], _Flight] = {}
        self._flights_lock = threading.Lock()

    def key(self, user_id: str, culture: str) -> tuple[str, str, str]:
        return (self.retailer_id, culture, user_id)

    def _now(self) -> float:
        return self.clock().timestamp()

    def lookup(self, user_id: str, culture: str, *, refresh: bool = False) -> Lookup:
        """The wallet within the deadline; `refresh` skips a fresh copy (stale still rescues)."""
        started = time.monotonic()
        key = self.key(user_id, culture)
        cached = self.cache.get(key)
        if cached is not None and not refresh:
            if cached.is_fresh(self._now()):
                return _lookup(cached, HIT)
            if cached.wallet is not None:
                self._flight(key, user_id, culture, slot_until=None)
                return Lookup(cached.wallet, STALE)
        stale = cached if cached is not None and cached.wallet is not None else None
        answer_by = started + self.deadline - min(SEND_MARGIN, self.deadline / 10)
        flight = self._flight(key, user_id, culture, slot_until=answer_by, refresh=refresh)
        landed = flight.done.wait(max(0.0, answer_by - time.monotonic()))
        if not landed or flight.error is not None:
            error = flight.error if landed else flight.timed_out()
            if stale is not None and not isinstance(error, UserNotFound):
                return Lookup(stale.wallet, STALE)
            raise copy.copy(error)  # a copy: other threads raise the same failure
        return _lookup(flight.entry, MISS)

    def _flight(self, key, user_id, culture, *, slot_until, refresh=False) -> _Flight:
        """The running flight for `key`, or a new one; `slot_until` None = background."""
        with self._flights_lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight
            flight = self._flights[key] = _Flight()
        threading.Thread(
            target=self._fly,
            args=(key, flight, user_id, culture, slot_until, refresh),
            name=f"wallet-flight-{user_id}",
            daemon=True,
        ).start()
        return flight

    def _fly(self, key, flight: _Flight, user_id, culture, slot_until, refresh) -> None:
        try:
            flight.entry = self._obtain(key, flight, user_id, culture, slot_until, refresh)
        except WalletProxyError as error:
            flight.error = error
        except Exception:
            log.exception("wallet fetch for %s failed unexpectedly", user_id)
            flight.error = WalletProxyError()
        finally:
            with self._flights_lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    def _obtain(self, key, flight: _Flight, user_id, culture, slot_until, refresh) -> Entry:
        fetch_by = time.monotonic() + self.upstream_timeout
        since = self._now()

        def landed() -> Entry | None:
            """An entry stored by someone else that answers this flight as well."""
            entry = self.cache.get(key)
            if entry is None:
                return None
            if refresh:
                return entry if entry.fetched_at > since else None
            return entry if entry.is_fresh(self._now()) else None

        # A flight that ended between our caller's cache miss and this one's start.
        entry = landed()
        if entry is not None:
            return entry
        if not self.cache.shared:
            return self._fetch(key, flight, user_id, culture, slot_until, fetch_by)
        while True:
            token = self.cache.lock(key, lease=self.upstream_timeout + 1)
            if token is not None:
                break
            flight.calling = True  # another process's call is under way
            entry = self._await_other_process(key, landed, fetch_by)
            if entry is not None:
                return entry
        try:
            # The previous lock holder may have stored its answer since we looked.
            return landed() or self._fetch(key, flight, user_id, culture, slot_until, fetch_by)
        except UpstreamError as error:
            if not isinstance(error, UserNotFound):
                self.cache.put_error(key, type(error).__name__, ERROR_TTL)
            raise
        finally:
            self.cache.release(key, token)

    def _await_other_process(self, key, landed, fetch_by: float) -> Entry | None:
        """What the process holding the lock stored; None if it vanished without a result."""
        with self.cache.waiting(key) as woken:
            while True:
                # Lock first, then entry: the holder stores before it unlocks, so an
                # unlocked key read here has its entry visible below.
                locked = self.cache.is_locked(key)
                entry = landed()
                if entry is not None:
                    return entry
                name = self.cache.get_error(key)
                if name is not None:
                    raise _ERRORS_BY_NAME.get(name, UpstreamError)()
                if not locked:
                    return None  # its lease ran out or Redis failed: try to fetch ourselves
                remaining = fetch_by - time.monotonic()
                if remaining <= 0:
                    raise UpstreamTimeout()
                woken.wait(min(remaining, POLL_INTERVAL))
                woken.clear()

    def _fetch(self, key, flight: _Flight, user_id, culture, slot_until, fetch_by) -> Entry:
        def call() -> Wallet:
            flight.calling = True
            return self.client.fetch_wallet(user_id, culture, deadline=fetch_by)

        try:
            wallet = self.guard.call(call, wait_until=slot_until)
        except UserNotFound:
            now = self._now()
            entry = Entry(None, now, now + self.negative_ttl, now + self.negative_ttl)
        else:
            now = self._now()
            fresh_until = now + self.cache_ttl * (1 - JITTER * self.rng())
            entry = Entry(wallet, now, fresh_until, fresh_until + self.stale_ttl)
        self.cache.put(key, entry)
        return entry


def _lookup(entry: Entry, state: str) -> Lookup:
    if entry.wallet is None:
        raise UserNotFound()
    return Lookup(entry.wallet, state)
