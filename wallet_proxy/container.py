"""The services every feature shares, built here and nowhere else, in one typed container.

`create_app` builds the container once (`build_services`) and hands it to each feature's
`init_app`, which registers its blueprints and builds what only it uses (the support
pages' sessions, the triggers' outbox), as Flask's extensions do. Views and commands
reach the shared services through `services()`: one extension key, one type. The
container knows no feature; features know the container.

Whatever holds threads, connections or files is closed by `Services.close`, in reverse
order of building: the factory arranges for it to run when the app goes, and a feature
adds its own with `on_close`. A feature's long-lived loops (the trigger deliverer) run in
every process that serves the app: `serve_with` lists them, `start_loops` starts them
(gunicorn's worker hook, or the app's first request). What the probes and the metrics
read of a feature comes through `add_readiness` and `before_scrape`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import redis
from flask import Flask, current_app

from . import metrics
from .answers import AnswerMemo
from .background import Loop
from .budget import UNLIMITED, Budget, Fleet, LocalBudget, Priority, SharedBudget
from .cache import MemoryCache, RedisCache, WalletCache
from .config import Settings
from .coordination import Alone, Coordination, RedisCoordination
from .idempotency import DATABASE as IDEMPOTENCY_DATABASE
from .idempotency import REDIS_PREFIX as IDEMPOTENCY_PREFIX
from .idempotency import Idempotency
from .logs import warn_once
from .memory import Trimmer, limit_arenas
from .redis_clients import RENDER, RedisHealth, connect
from .sessionm import connect_client
from .sessionm_core import CoreClient, core_client
from .stores import shared_store
from .upstream import CircuitBreaker, UpstreamGuard
from .wallet_service import WalletService

log = logging.getLogger(__name__)

EXTENSION = "wallet_proxy"
# An Idempotency-Key's claim lasts the call itself (WALLET_PROXY_CORE_TIMEOUT) and this
# margin, then it is abandoned.
LEASE_MARGIN = 30.0
FLEET_STOP_WAIT = 1.0
# The share of WALLET_PROXY_CACHE_MAX_BYTES for rendered answers (answers.py); the rest is
# for the wallets themselves (cache.MemoryCache).
ANSWERS_SHARE = 0.125

Clock = Callable[[], datetime]  # an aware UTC datetime; tests move it by hand


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Clock
    wallet_service: WalletService
    answers: AnswerMemo
    redis: redis.Redis | None  # the render profile's client (redis_clients.py)
    redis_health: RedisHealth | None  # whether this process uses Redis now
    core: CoreClient | None  # None: SessionM Core is not configured
    connect_budget: Budget  # requests/s to SessionM Connect, for the whole fleet
    core_budget: Budget  # the same for Core
    idempotency: Idempotency | None  # None: no direct tags relay (no Core, or queued tags)
    _closers: list[Callable[[], object]] = field(default_factory=list)
    _loops: list[Loop] = field(default_factory=list)
    _readiness: list[Callable[[], Mapping[str, str]]] = field(default_factory=list)
    _before_scrape: list[Callable[[], None]] = field(default_factory=list)

    def unix_time(self) -> float:
        return self.clock().timestamp()

    def on_close(self, closer: Callable[[], object]) -> None:
        """Run `closer` when the app closes (before what was registered earlier)."""
        self._closers.append(closer)

    def serve_with(self, loop: Loop, *, stop_wait: float) -> None:
        """Run `loop` in every process that serves the app (`start_loops`); when the app
        closes, stop it and wait up to `stop_wait` seconds for it."""
        self._loops.append(loop)
        self.on_close(lambda: loop.stop(stop_wait))

    def start_loops(self) -> None:
        """Start in this process each loop of `serve_with` not started here yet: an attribute
        check each once they are. A loop whose thread can't start is logged and left
        `ended` (what depends on it says so)."""
        for loop in self._loops:
            try:
                loop.start()
            except RuntimeError:
                log.exception("could not start %s", loop.name)

    def add_readiness(self, check: Callable[[], Mapping[str, str]]) -> None:
        """Report `check`'s states in /readyz: name to state, "ok" when all is well. It
        never raises, and never makes the instance unready (health.py says why)."""
        self._readiness.append(check)

    def readiness(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for check in self._readiness:
            found.update(check())
        return found

    def before_scrape(self, reading: Callable[[], None]) -> None:
        """Run `reading` before each metrics scrape: a gauge only the scrape can read."""
        self._before_scrape.append(reading)

    def prepare_scrape(self) -> None:
        for reading in self._before_scrape:
            reading()

    def close(self) -> None:
        """Stop the threads, close the pools and files of everything built for this app.
        Safe to call twice."""
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:
                log.exception("closing %r failed", closer)


def services(app: Flask | None = None) -> Services:
    """The container of `app`, or of the app handling the current request."""
    found: Services = (app or current_app).extensions[EXTENSION]
    return found


def register(app: Flask, found: Services) -> None:
    """Hold `found` in `app`, closed when the app is collected or the process exits."""
    app.extensions[EXTENSION] = found
    weakref.finalize(app, found.close)


def shared_redis(settings: Settings) -> tuple[redis.Redis | None, RedisHealth | None]:
    """The render profile's client of WALLET_PROXY_REDIS_URL and its health, or (None, None)."""
    return _render_client(settings.redis_url)


def _render_client(url: str | None) -> tuple[redis.Redis | None, RedisHealth | None]:
    if not url:
        return None, None
    return connect(url, RENDER), RedisHealth(on_failure=metrics.redis_error)


def sessionm_budgets(
    settings: Settings,
    shared: redis.Redis | None,
    health: RedisHealth | None,
    closers: list[Callable[[], object]],
) -> tuple[Budget, Budget]:
    """(Connect's, Core's) request budgets: for the fleet in Redis, else per process.
    What must be stopped with them is added to `closers`."""
    shares = {
        Priority.WAITING: 1.0,
        Priority.BULK: settings.bulk_share,
        Priority.REFRESH: settings.refresh_share,
    }
    rates = {"connect": settings.sessionm_rate, "core": settings.sessionm_core_rate}
    made: Callable[[str, float], Budget]
    if shared is None or health is None:
        processes = settings.fleet_size or 1
        # Core's budget is used only with Core configured (the tags relay).
        used = {
            "Connect": rates["connect"],
            "Core": rates["core"] if settings.core_configured else 0,
        }
        per_process = ", ".join(
            f"{rate / processes:g} requests/s to {api}" for api, rate in used.items() if rate
        )
        # WALLET_PROXY_FLEET_SIZE=1 (the demo): this process is the fleet, its budget the
        # fleet's.
        if per_process and settings.fleet_size != 1:
            warn_once(
                log,
                "The SessionM budgets are per process without WALLET_PROXY_REDIS_URL: each "
                "process may send %s (the rates / WALLET_PROXY_FLEET_SIZE), however many "
                "processes run",
                per_process,
            )

        def made(name: str, rate: float) -> Budget:
            return LocalBudget(rate / processes, shares)

    else:
        fleet = Fleet(shared, configured=settings.fleet_size)
        fleet.touch()
        closers.append(lambda: fleet.stop(FLEET_STOP_WAIT))

        def made(name: str, rate: float) -> Budget:
            return SharedBudget(shared, name, rate, shares, fleet, health=health)

    budgets = {
        name: metrics.MeteredBudget(name, made(name, rate)) if rate else UNLIMITED
        for name, rate in rates.items()
    }
    return budgets["connect"], budgets["core"]


def wallet_cache(
    settings: Settings,
    max_bytes: int,
    unix_time: Callable[[], float],
    shared: tuple[redis.Redis | None, RedisHealth | None],
    closers: list[Callable[[], object]],
) -> tuple[WalletCache, Coordination]:
    """The wallet cache, of at most `max_bytes` in this process, and how processes sharing
    it take turns: in Redis when there is one, the cache's own (WALLET_PROXY_CACHE_REDIS_URL,
    one that evicts what it must, so that wallets never fill the Redis of the outbox and the
    budget) or else the shared one."""
    limit_arenas()
    trimmer = Trimmer()
    closers.append(trimmer.close)
    memory = MemoryCache(max_bytes=max_bytes, unix_time=unix_time, trimmer=trimmer)
    client, health = _render_client(settings.cache_redis_url)
    if client is not None:
        closers.append(client.close)
    else:
        client, health = shared
    if client is None or health is None:
        return memory, Alone()
    cache = RedisCache(client, local=memory, health=health, unix_time=unix_time)
    return cache, RedisCoordination(client, health=health)


def build_services(settings: Settings, clock: Clock) -> Services:
    """Every shared service of one app, wired together; the only place that does it."""
    closers: list[Callable[[], object]] = []

    def unix_time() -> float:
        return clock().timestamp()

    shared, health = shared_redis(settings)
    if shared is not None:
        closers.append(shared.close)
    idempotency = None
    if settings.core_configured and not settings.tags_queued:  # queued: the outbox dedupes
        store = shared_store(
            settings, shared, unix_time, database=IDEMPOTENCY_DATABASE, prefix=IDEMPOTENCY_PREFIX
        )
        idempotency = Idempotency(store, lease=settings.core_timeout + LEASE_MARGIN)
    answers_bytes = int(settings.cache_max_bytes * ANSWERS_SHARE)
    cache, coordination = wallet_cache(
        settings, settings.cache_max_bytes - answers_bytes, unix_time, (shared, health), closers
    )
    connect_budget, core_budget = sessionm_budgets(settings, shared, health, closers)
    breaker = CircuitBreaker(
        threshold=settings.breaker_threshold, cooldown=settings.breaker_cooldown
    )
    client = connect_client(settings, clock, connect_budget)
    closers.append(client.close)
    wallet_service = WalletService(
        client=client,
        cache=cache,
        coordination=coordination,
        guard=UpstreamGuard(concurrency=settings.upstream_concurrency, breaker=breaker),
        retailer_id=settings.sessionm_retailer_id,
        deadline=settings.deadline,
        upstream_timeout=settings.upstream_timeout,
        cache_ttl=settings.cache_ttl,
        stale_ttl=settings.stale_ttl,
        negative_ttl=settings.negative_ttl,
        clock=clock,
        refresh_share=settings.refresh_share,
        budget=connect_budget,
    )
    closers.append(wallet_service.close)
    core = core_client(settings, core_budget)
    if core is not None:
        closers.append(core.close)
    return Services(
        settings=settings,
        clock=clock,
        wallet_service=wallet_service,
        answers=AnswerMemo(max_bytes=answers_bytes, max_answer_bytes=settings.max_answer_bytes),
        redis=shared,
        redis_health=health,
        core=core,
        connect_budget=connect_budget,
        core_budget=core_budget,
        idempotency=idempotency,
        _closers=closers,
    )
