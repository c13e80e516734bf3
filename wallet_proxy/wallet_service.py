"""Getting a wallet for a user: the policy of fresh, stale and refusal over the cache.

The one entry point every consumer shares (API, support pages, warm-up, trigger
enrichment), so they all see the same cache and the same rules. Each lookup has a
priority, the SessionM budget's own (budget.Priority), which says what it may wait for:

- WAITING (a render, a support page): a fresh entry answers at once (HIT); a stale one
  answers at once (STALE) and starts a background refresh; otherwise the asker joins
  the one fetch of that wallet and waits until its deadline, then gets the fetched
  wallet, a stale copy, or the error.
- REFRESH (a stale entry's background refresh, a trigger's wallet summary): as WAITING,
  but a fetch goes only if the budget has room and this process has SessionM slots to
  spare now (a share of them, WALLET_PROXY_SESSIONM_REFRESH_SHARE): it never makes a
  render wait.
- BULK (`warm`): always fetches, waits its turn at the budget's bulk share, stores the
  entry fresh for as long as asked, and gets the error rather than a stale copy.

The mechanisms are elsewhere: the single flight (singleflight.py) runs one fetch per
wallet in this process; coordination.py lets one process of those sharing a cache fetch
while the others wait for its result; deadline.py hands out each step's share of the
time; upstream.py caps the calls in flight and holds the circuit breaker.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from . import metrics, tally
from .background import Pool
from .budget import UNLIMITED, Budget, Claim, Priority
from .cache import Entry, WalletCache, WalletKey
from .coordination import Coordination
from .deadline import Deadline
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
from .singleflight import Flight, SingleFlight
from .upstream import UpstreamGuard
from .wallet import Wallet

log = logging.getLogger(__name__)

HIT, MISS, STALE = "HIT", "MISS", "STALE"

JITTER = 0.1  # fresh lifetimes vary by up to 10 %, so a campaign's users don't expire together
ERROR_TTL = 1.0  # seconds a failure stays visible to other processes waiting on the same key
BULK_PATIENCE = 10.0  # seconds a warm-up fetch waits for budget before it counts as failed
# Fetches running at once in one process: each request thread waits on at most one, and
# background refreshes stop at the SessionM slots; this is well above both.
FLIGHT_THREADS = 256


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
class _Fetch:
    """What one flight fetches, and by when."""

    key: WalletKey
    priority: Priority  # its standing for the SessionM budget and the slots
    deadline: Deadline
    since: float  # Unix time the fetch was asked for
    refresh: bool  # only an answer fetched after `since` will do, not merely a fresh one
    fresh_for: float | None = None  # seconds the entry stays fresh; None: the cache TTL


class WalletService:
    """`clock` is the app's wall clock (entries' lifetimes); `timer` the monotonic one
    deadlines are measured by, shared with the guard and the SessionM client."""

    def __init__(
        self,
        *,
        client: ConnectClient,
        cache: WalletCache,
        coordination: Coordination,
        guard: UpstreamGuard,
        retailer_id: str,
        deadline: float,
        upstream_timeout: float,
        cache_ttl: float,
        stale_ttl: float,
        negative_ttl: float,
        clock: Callable[[], datetime],
        refresh_share: float = 0.5,
        rng: Callable[[], float] = random.random,
        timer: Callable[[], float] = time.monotonic,
        budget: Budget = UNLIMITED,
    ):
        self.client = client
        self.budget = budget  # SessionM Connect's, also the client's for further pages
        self.cache = cache
        self.coordination = coordination
        self.guard = guard
        self.retailer_id = retailer_id
        self.deadline = deadline
        self.upstream_timeout = upstream_timeout
        self.cache_ttl = cache_ttl
        self.stale_ttl = stale_ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.refresh_share = refresh_share
        self.rng = rng
        self.timer = timer
        self.flights: SingleFlight[WalletKey, Entry] = SingleFlight(
            Pool("wallet-flight", FLIGHT_THREADS)
        )

    def key(self, user_id: str, culture: str) -> WalletKey:
        return WalletKey(self.retailer_id, culture, user_id)

    def _now(self) -> float:
        return self.clock().timestamp()

    def peek(self, user_id: str, culture: str) -> Entry | None:
        """The cached entry as it is, fresh or stale, without a fetch."""
        return self.cache.get(self.key(user_id, culture))

    def hit(self, user_id: str, culture: str) -> Lookup | None:
        """A fresh cached wallet (a HIT), or None: what the cache-hit path answers without
        Flask (fast_hits.py); anything else goes through `lookup`."""
        cached = self.cache.get(self.key(user_id, culture))
        if cached is None or cached.wallet is None or cached.refused is not None:
            return None
        return Lookup(cached.wallet, HIT) if cached.is_fresh(self._now()) else None

    def status(self) -> dict[str, str]:
        """The readiness probe's checks: the cache's, and the circuit breaker's state."""
        return {**self.cache.status(), "sessionm_circuit": self.guard.breaker.state}

    def freshness_left(self, user_id: str, culture: str) -> float:
        """Seconds the cached wallet stays fresh from now; 0 when none is."""
        cached = self.peek(user_id, culture)
        return 0.0 if cached is None else max(0.0, cached.fresh_until - self._now())

    def lookup(
        self,
        user_id: str,
        culture: str,
        *,
        priority: Priority = Priority.WAITING,
        refresh: bool = False,
        fresh_for: float | None = None,
    ) -> Lookup:
        """The wallet within the priority's deadline (see the module docstring); `refresh`
        skips a fresh copy (a stale one still rescues a failed fetch, but for BULK)."""
        started = self.timer()
        key = self.key(user_id, culture)
        bulk = priority is Priority.BULK
        cached = None if bulk else self.cache.get(key)
        if cached is not None and not refresh:
            if cached.is_fresh(self._now()):
                metrics.cache_result("hit" if cached.wallet is not None else "negative")
                return _lookup(cached, HIT)
            if cached.wallet is not None:
                metrics.cache_result("stale")
                self._background_refresh(key)
                return Lookup(cached.wallet, STALE)
        if bulk:
            deadline = Deadline.bulk(started, BULK_PATIENCE, self.upstream_timeout)
        else:
            metrics.cache_result("miss")
            made = Deadline.render if priority is Priority.WAITING else Deadline.spare
            deadline = made(started, self.deadline, self.upstream_timeout)
        flight = self._flight(
            _Fetch(key, priority, deadline, self._now(), refresh or bulk, fresh_for)
        )
        with metrics.waiting_for_flight():
            landed = flight.done.wait(max(0.0, deadline.answer_by - self.timer()))
        if not landed:
            error: Exception = UpstreamTimeout() if flight.calling else UpstreamBusy()
        elif flight.error is not None:
            error = flight.error
        else:
            assert flight.value is not None  # a flight ends with an entry or an error
            return _lookup(flight.value, MISS)
        stale = cached.wallet if cached is not None else None
        if stale is not None and not isinstance(error, UserNotFound):
            return Lookup(stale, STALE)
        raise copy.copy(error)  # a copy: other threads raise the same failure

    def warm(self, user_id: str, culture: str, *, fresh_for: float) -> Lookup:
        """Fetch the wallet at the budget's bulk share and keep it fresh for `fresh_for`
        seconds. No jitter on these lifetimes: entries expire at the pace they were
        warmed, which the budget already spreads."""
        return self.lookup(user_id, culture, priority=Priority.BULK, fresh_for=fresh_for)

    def close(self) -> None:
        self.flights.pool.shutdown()
        self.coordination.close()

    def _background_refresh(self, key: WalletKey) -> None:
        """One fetch at the REFRESH priority that nobody waits for: the stale copy stays
        if there is no room for it now."""
        now = self.timer()
        deadline = Deadline.spare(now, self.deadline, self.upstream_timeout)
        self._flight(_Fetch(key, Priority.REFRESH, deadline, self._now(), refresh=False))

    def _flight(self, fetch: _Fetch) -> Flight[Entry]:
        """The running flight for the key, or a new one for this fetch; its SessionM calls
        count for the request that started it (tally.carried)."""
        return self.flights.join(
            fetch.key, tally.carried(functools.partial(self._obtain_safely, fetch))
        )

    def _obtain_safely(self, fetch: _Fetch, flight: Flight[Entry]) -> Entry:
        try:
            return self._obtain(fetch, flight)
        except WalletProxyError:
            raise
        except Exception:
            log.exception("wallet fetch for %s failed unexpectedly", UserRef(fetch.key.user_id))
            raise WalletProxyError() from None

    def _landed(self, fetch: _Fetch) -> Entry | None:
        """An entry stored by someone else that answers this fetch as well."""
        entry = self.cache.get(fetch.key)
        if entry is None:
            return None
        if fetch.refresh:
            return entry if entry.fetched_at > fetch.since else None
        return entry if entry.is_fresh(self._now()) else None

    def _obtain(self, fetch: _Fetch, flight: Flight[Entry]) -> Entry:
        # A flight that ended between our caller's cache miss and this one's start.
        entry = self._landed(fetch)
        if entry is not None:
            return entry
        landed = functools.partial(self._landed, fetch)
        lease = fetch.deadline.lease(self.timer())
        while (token := self.coordination.lock(fetch.key, lease=lease)) is None:
            flight.calling = True  # another process's call is under way
            entry = self.coordination.await_holder(fetch.key, landed, fetch.deadline.fetch_by)
            if entry is not None:
                return entry
        try:
            # The previous lock holder may have stored its answer since we looked.
            return landed() or self._fetch(fetch, flight)
        except UpstreamError as error:
            if not isinstance(error, UserNotFound):
                self.coordination.put_error(fetch.key, type(error).__name__, ERROR_TTL)
            raise
        finally:
            self.coordination.release(fetch.key, token)

    def _fetch(self, fetch: _Fetch, flight: Flight[Entry]) -> Entry:
        claim = Claim(fetch.priority, fetch.deadline.budget_until)

        def call() -> Entry:
            flight.calling = True
            wallet = self.client.fetch_wallet(
                fetch.key.user_id,
                fetch.key.culture,
                deadline=fetch.deadline.fetch_by,
                claim=claim,
            )
            # Stored before the slot is let go: a wallet's memory while it is parsed and
            # stored (for Redis, its JSON too) is what the slots bound (docs/operations.md).
            entry = self._fetched(wallet, fetch)
            self.cache.put(fetch.key, entry)
            return entry

        # The budget comes first: waiting for it holds no concurrency slot, and a refusal
        # (UpstreamBusy, with the queue's Retry-After) never reaches the breaker.
        self.budget.acquire(claim)
        share = self.refresh_share if fetch.priority is Priority.REFRESH else 1.0
        try:
            return self.guard.call(call, wait_until=fetch.deadline.slot_until, share=share)
        except UserNotFound:
            now = self._now()
            entry = Entry(None, now, now + self.negative_ttl, now + self.negative_ttl)
        except WalletTooLarge as error:
            entry = self._refusal(fetch.key, error)
        self.cache.put(fetch.key, entry)
        return entry

    def _fetched(self, wallet: Wallet, fetch: _Fetch) -> Entry:
        now = self._now()
        if fetch.fresh_for is not None:
            fresh_until = now + fetch.fresh_for
        else:
            fresh_until = now + self.cache_ttl * (1 - JITTER * self.rng())
        return Entry(wallet, now, fresh_until, fresh_until + self.stale_ttl)

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
