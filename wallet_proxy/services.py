"""The app's services: built here and nowhere else, held in one typed container.

`create_app` calls `build_services` once; views, blueprints and commands reach
everything through `services()`: one extension key, one type, nothing
registered behind the factory's back, and each SessionM client built by one
function whoever needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast

from flask import Flask, current_app

if TYPE_CHECKING:
    import redis

    from .answers import AnswerMemo
    from .budget import Budget
    from .config import Settings
    from .idempotency import Idempotency
    from .service import WalletService
    from .sessionm_core import CoreClient
    from .support.history import StaffHistory
    from .support.sessions import StaffSessions
    from .support.throttle import HashSlots, LoginThrottle
    from .triggers.setup import Triggers

log = logging.getLogger(__name__)

EXTENSION = "wallet_proxy"
# An Idempotency-Key's claim lasts the call itself (WALLET_PROXY_CORE_TIMEOUT) and this
# margin, then it is abandoned.
LEASE_MARGIN = 30.0

REDIS_CONNECTIONS = 512  # per process

Clock = Callable[[], datetime]  # an aware UTC datetime; tests move it by hand


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Clock
    wallet_service: WalletService
    answers: AnswerMemo
    redis: redis.Redis | None
    core: CoreClient | None  # None: SessionM Core is not configured
    connect_budget: Budget  # requests/s to SessionM Connect, for the whole fleet
    core_budget: Budget  # the same for Core
    idempotency: Idempotency
    login_throttle: LoginThrottle
    triggers: Triggers | None  # None: Braze triggers are not configured
    hash_slots: HashSlots
    # The support pages' shared state; None without staff accounts (no pages).
    staff_sessions: StaffSessions | None
    staff_history: StaffHistory | None


def services(app: Flask | None = None) -> Services:
    """The container of `app`, or of the app handling the current request."""
    return cast(Services, (app or current_app).extensions[EXTENSION])


def sessionm_budgets(settings: Settings, shared: redis.Redis | None) -> tuple[Budget, Budget]:
    """(Connect's, Core's) request budgets: for the fleet in Redis, else per process."""
    from .budget import UNLIMITED, Fleet, LocalBudget, Priority, SharedBudget
    from .metrics import MeteredBudget

    shares = {
        Priority.WAITING: 1.0,
        Priority.BULK: settings.bulk_share,
        Priority.REFRESH: settings.refresh_share,
    }
    rates = {"connect": settings.sessionm_rate, "core": settings.sessionm_core_rate}
    made: Callable[[str, float], Budget]
    if shared is None:
        processes = settings.fleet_size or 1
        if any(rates.values()):
            log.warning(
                "The SessionM budgets are per process without WALLET_PROXY_REDIS_URL: each "
                "process may send %g requests/s to Connect and %g to Core (the rates / "
                "WALLET_PROXY_FLEET_SIZE), however many processes run",
                rates["connect"] / processes,
                rates["core"] / processes,
            )

        def made(name: str, rate: float) -> Budget:
            return LocalBudget(rate / processes, shares)

    else:
        fleet = Fleet(shared, configured=settings.fleet_size)
        fleet.touch()

        def made(name: str, rate: float) -> Budget:
            return SharedBudget(shared, name, rate, shares, fleet)

    budgets = {
        name: MeteredBudget(name, made(name, rate)) if rate else UNLIMITED
        for name, rate in rates.items()
    }
    return budgets["connect"], budgets["core"]


def build_services(settings: Settings, clock: Clock) -> Services:
    """Every service of one app, wired together; the only place that does it."""
    from .answers import AnswerMemo
    from .cache import MemoryCache, RedisCache, WalletCache
    from .idempotency import Idempotency, MemoryStore, RedisStore
    from .service import WalletService
    from .sessionm import connect_client
    from .sessionm_core import core_client
    from .stores import shared_store
    from .support.history import StaffHistory
    from .support.sessions import StaffSessions
    from .support.throttle import HashSlots, LoginThrottle
    from .triggers.setup import build_triggers
    from .upstream import CircuitBreaker, UpstreamGuard

    def unix_time() -> float:
        return clock().timestamp()

    memory = MemoryCache(maxsize=settings.cache_max_entries, unix_time=unix_time)
    cache: WalletCache = memory
    shared = redis_client(settings)
    if shared is not None:
        cache = RedisCache(shared, fallback=memory, unix_time=unix_time)
    connect_budget, core_budget = sessionm_budgets(settings, shared)
    breaker = CircuitBreaker(
        threshold=settings.breaker_threshold, cooldown=settings.breaker_cooldown
    )
    wallet_service = WalletService(
        client=connect_client(settings, clock, connect_budget),
        cache=cache,
        guard=UpstreamGuard(concurrency=settings.upstream_concurrency, breaker=breaker),
        retailer_id=settings.sessionm_retailer_id,
        deadline=settings.deadline,
        upstream_timeout=settings.upstream_timeout,
        cache_ttl=settings.cache_ttl,
        stale_ttl=settings.stale_ttl,
        negative_ttl=settings.negative_ttl,
        clock=clock,
        budget=connect_budget,
    )
    if shared is None and settings.core_configured:
        log.warning(
            "Idempotency-Key replay is per process without WALLET_PROXY_REDIS_URL: with "
            "several workers, a retried counter-tag call may be applied twice"
        )
    store = shared_store(settings, shared, unix_time) if settings.staff_users else None
    return Services(
        settings=settings,
        clock=clock,
        wallet_service=wallet_service,
        answers=AnswerMemo(max_bytes=settings.max_answer_bytes),
        redis=shared,
        core=core_client(settings, core_budget),
        connect_budget=connect_budget,
        core_budget=core_budget,
        idempotency=Idempotency(
            RedisStore(shared) if shared is not None else MemoryStore(),
            lease=settings.core_timeout + LEASE_MARGIN,
        ),
        login_throttle=LoginThrottle(timer=unix_time, staff_names=settings.staff_users.keys()),
        triggers=build_triggers(settings, unix_time),
        hash_slots=HashSlots(),
        staff_sessions=StaffSessions(store) if store is not None else None,
        staff_history=StaffHistory(store, clock) if store is not None else None,
    )


def redis_client(settings: Settings) -> redis.Redis | None:
    """The shared Redis, or None when WALLET_PROXY_REDIS_URL is not set."""
    import redis

    if not settings.redis_url:
        return None
    # Short timeouts: a slow Redis must not eat the answer's deadline.
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        health_check_interval=15,
        # redis-py 8 caps a pool at 100 connections: fewer than a worker's request threads
        # and their flights together, when SessionM's budget keeps many of them waiting.
        max_connections=REDIS_CONNECTIONS,
    )
