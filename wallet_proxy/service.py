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
answer still fills the cache for Braze's next render. The flight first takes
that key's lock from the cache: Redis grants it to one process, which fetches
while the others wait for its result; the in-process cache always grants it.

Each SessionM request asks the fleet's budget (budget.py) with the flight's
priority: a render waits for room until its deadline, a background refresh goes
only if there is room now (else it is skipped and the stale copy stays), and
`warm` takes the bulk share, storing entries fresh for as long as it was told.
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

from . import metrics, tally
from .budget import UNLIMITED, Budget, Claim, Priority
from .cache import Entry, WalletCache, WalletKey
from .errors import (
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    UserNotFound,
    WalletProxyError,
    WalletTooLarge,
)
from .logs import UserRef
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
BULK_PATIENCE = 10.0  # seconds a warm-up fetch waits for budget before it counts as failed
# A render waits for budget this share of its deadline at most; the rest is for SessionM's
# answer. Booked later, every render of a saturated budget would answer too late.
QUEUE_SHARE = 2 / 3


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


@dataclass(frozen=True, slots=True)
class _Request:
    """What one flight fetches, and by when."""

    key: WalletKey
    refresh: bool  # only an answer fetched after `since` will do, not merely a fresh one
    slot_until: float | None  # a `timer()` instant to wait for a SessionM slot; None: don't
    fetch_by: float  # a `timer()` instant the SessionM call must end by
    since: float  # Unix time the flight was asked for
    priority: Priority = Priority.WAITING  # its standing for the SessionM budget
    budget_until: float | None = None  # a `timer()` instant to wait for budget; None: don't
    fresh_for: float | None = None  # seconds the entry stays fresh; None: the cache TTL


class _Flight:
    """One fetch of one key, and everyone waiting for it."""

    __slots__ = ("calling", "done", "entry", "error", "request")

    def __init__(self, request: _Request):
        self.request = request
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
    """`clock` is the app's wall clock (entries' lifetimes); `timer` the monotonic one
    deadlines are measured by, shared with the guard and the SessionM client."""

    def __init__(
        self,
        *,
        client: ConnectClient,
        cache: WalletCache,
        guard: UpstreamGuard,
        retailer_id: str,
        deadline: float,
        upstream_timeout: float,
        cache_ttl: float,
        stale_ttl: float,
        negative_ttl: float,
        clock: Callable[[], datetime],
        rng: Callable[[], float] = random.random,
        timer: Callable[[], float] = time.monotonic,
        budget: Budget = UNLIMITED,
    ):
        self.client = client
        self.budget = budget  # SessionM Connect's, also the client's for further pages
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
        self.timer = timer
        self._flights: dict[WalletKey, _Flight] = {}
        self._flights_lock = threading.Lock()

    def key(self, user_id: str, culture: str) -> WalletKey:
        return WalletKey(self.retailer_id, culture, user_id)

    def _now(self) -> float:
        return self.clock().timestamp()

    def lookup(self, user_id: str, culture: str, *, refresh: bool = False) -> Lookup:
        """The wallet within the deadline; `refresh` skips a fresh copy (stale still rescues)."""
        started = self.timer()
        key = self.key(user_id, culture)
        cached = self.cache.get(key)
        if cached is not None and not refresh:
            if cached.is_fresh(self._now()):
                metrics.cache_result("hit" if cached.wallet is not None else "negative")
                return _lookup(cached, HIT)
            if cached.wallet is not None:
                metrics.cache_result("stale")
                self._flight(
                    self._request(key, slot_until=None, refresh=False, priority=Priority.REFRESH)
                )
                return Lookup(cached.wallet, STALE)
        metrics.cache_result("miss")
        stale = cached.wallet if cached is not None else None
        answer_by = started + self.deadline - min(SEND_MARGIN, self.deadline / 10)
        flight = self._flight(
            self._request(
                key,
                slot_until=answer_by,
                refresh=refresh,
                budget_until=started + self.deadline * QUEUE_SHARE,
            )
        )
        with metrics.waiting_for_flight():
            landed = flight.done.wait(max(0.0, answer_by - self.timer()))
        if not landed:
            error = flight.timed_out()
        elif flight.error is not None:
            error = flight.error
        else:
            assert flight.entry is not None  # a flight ends with an entry or an error
            return _lookup(flight.entry, MISS)
        if stale is not None and not isinstance(error, UserNotFound):
            return Lookup(stale, STALE)
        raise copy.copy(error)  # a copy: other threads raise the same failure

    def freshness_left(self, user_id: str, culture: str) -> float:
        """Seconds the cached wallet stays fresh from now; 0 when none is."""
        cached = self.cache.get(self.key(user_id, culture))
        return 0.0 if cached is None else max(0.0, cached.fresh_until - self._now())

    def warm(self, user_id: str, culture: str, *, fresh_for: float) -> Lookup:
        """Fetch the wallet at the budget's bulk share and keep it fresh for `fresh_for`
        seconds.

        No jitter on these lifetimes: entries expire at the pace they were warmed, which
        the budget already spreads.
        """
        key = self.key(user_id, culture)
        slot_until = self.timer() + BULK_PATIENCE
        request = _Request(
            key,
            refresh=True,
            slot_until=slot_until,
            fetch_by=slot_until + self.upstream_timeout,
            since=self._now(),
            priority=Priority.BULK,
            budget_until=slot_until,
            fresh_for=fresh_for,
        )
        flight = self._flight(request)
        if not flight.done.wait(max(0.0, request.fetch_by - self.timer()) + 1):
            raise flight.timed_out()
        if flight.error is not None:
            raise copy.copy(flight.error)
        assert flight.entry is not None  # a flight ends with an entry or an error
        return _lookup(flight.entry, MISS)

    def _request(
        self,
        key: WalletKey,
        *,
        slot_until: float | None,
        refresh: bool,
        priority: Priority = Priority.WAITING,
        budget_until: float | None = None,
    ) -> _Request:
        """`slot_until` None: a background refresh, which never waits for a slot."""
        return _Request(
            key,
            refresh=refresh,
            slot_until=slot_until,
            fetch_by=self.timer() + self.upstream_timeout,
            since=self._now(),
            priority=priority,
            budget_until=budget_until,
        )

    def _flight(self, request: _Request) -> _Flight:
        """The running flight for the request's key, or a new one for this request."""
        with self._flights_lock:
            flight = self._flights.get(request.key)
            if flight is not None:
                return flight
            flight = self._flights[request.key] = _Flight(request)
        threading.Thread(
            target=tally.carried(self._fly),  # its SessionM calls count for this request
            args=(flight,),
            name=f"wallet-flight-{request.key.user_id}",
            daemon=True,
        ).start()
        return flight

    def _fly(self, flight: _Flight) -> None:
        key = flight.request.key
        try:
            flight.entry = self._obtain(flight)
        except WalletProxyError as error:
            flight.error = error
        except Exception:
            log.exception("wallet fetch for %s failed unexpectedly", UserRef(key.user_id))
            flight.error = WalletProxyError()
        finally:
            with self._flights_lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    def _landed(self, request: _Request) -> Entry | None:
        """An entry stored by someone else that answers this request as well."""
        entry = self.cache.get(request.key)
        if entry is None:
            return None
        if request.refresh:
            return entry if entry.fetched_at > request.since else None
        return entry if entry.is_fresh(self._now()) else None

    def _obtain(self, flight: _Flight) -> Entry:
        request = flight.request
        # A flight that ended between our caller's cache miss and this one's start.
        entry = self._landed(request)
        if entry is not None:
            return entry
        lease = request.fetch_by - self.timer() + 1  # the whole call, budget wait included
        while (token := self.cache.lock(request.key, lease=lease)) is None:
            flight.calling = True  # another process's call is under way
            entry = self._await_other_process(request)
            if entry is not None:
                return entry
        try:
            # The previous lock holder may have stored its answer since we looked.
            return self._landed(request) or self._fetch(flight)
        except UpstreamError as error:
            if not isinstance(error, UserNotFound):
                self.cache.put_error(request.key, type(error).__name__, ERROR_TTL)
            raise
        finally:
            self.cache.release(request.key, token)

    def _await_other_process(self, request: _Request) -> Entry | None:
        """What the process holding the lock stored; None if it vanished without a result."""
        with self.cache.waiting(request.key) as woken:
            while True:
                # Lock first, then entry: the holder stores before it unlocks, so an
                # unlocked key read here has its entry visible below.
                locked = self.cache.is_locked(request.key)
                entry = self._landed(request)
                if entry is not None:
                    return entry
                name = self.cache.get_error(request.key)
                if name is not None:
                    raise _upstream_error_named(name)
                if not locked:
                    return None  # its lease ran out or Redis failed: try to fetch ourselves
                remaining = request.fetch_by - self.timer()
                if remaining <= 0:
                    raise UpstreamTimeout()
                woken.wait(min(remaining, POLL_INTERVAL))
                woken.clear()

    def _fetch(self, flight: _Flight) -> Entry:
        request = flight.request
        claim = Claim(request.priority, request.budget_until)

        def call() -> Wallet:
            flight.calling = True
            return self.client.fetch_wallet(
                request.key.user_id, request.key.culture, deadline=request.fetch_by, claim=claim
            )

        # The budget comes first: waiting for it holds no concurrency slot, and a refusal
        # (UpstreamBusy, with the queue's Retry-After) never reaches the breaker.
        self.budget.acquire(claim)
        try:
            wallet = self.guard.call(call, wait_until=request.slot_until)
        except UserNotFound:
            now = self._now()
            entry = Entry(None, now, now + self.negative_ttl, now + self.negative_ttl)
        except WalletTooLarge as error:
            entry = self._refusal(request.key, error)
        else:
            now = self._now()
            if request.fresh_for is not None:
                fresh_until = now + request.fresh_for
            else:
                fresh_until = now + self.cache_ttl * (1 - JITTER * self.rng())
            entry = Entry(wallet, now, fresh_until, fresh_until + self.stale_ttl)
        self.cache.put(request.key, entry)
        return entry

    def _refusal(self, key: WalletKey, error: WalletTooLarge) -> Entry:
        """A refused wallet, remembered like a not-found so renders don't download it
        again; the last good copy, if still usable, goes on being served as stale."""
        now = self._now()
        until = now + self.negative_ttl
        previous = self.cache.get(key)
        if previous is None or previous.wallet is None or previous.stale_until <= now:
            return Entry(None, now, until, until, refused=error.message)
        return Entry(
            previous.wallet, now, until, max(until, previous.stale_until), refused=error.message
        )


def _lookup(entry: Entry, state: str) -> Lookup:
    if entry.refused is not None:
        if entry.wallet is None:
            raise WalletTooLarge(entry.refused)
        return Lookup(entry.wallet, STALE)
    if entry.wallet is None:
        raise UserNotFound()
    return Lookup(entry.wallet, state)


def _upstream_error_named(name: str) -> UpstreamError:
    """A failure another process marked by its class name (any class in the tree, so new
    ones travel too); a name this release doesn't know is a plain UpstreamError."""
    classes: list[type[UpstreamError]] = [UpstreamError]
    while classes:
        cls = classes.pop()
        if cls.__name__ == name:
            return cls()
        classes.extend(cls.__subclasses__())
    return UpstreamError()
