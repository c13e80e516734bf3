"""wallet-proxy: SessionM offer wallets for Braze Connected Content."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from flask import Flask

__version__ = "0.1.0"

log = logging.getLogger(__name__)


def create_app(test_config: Mapping | None = None) -> Flask:
    """Build the app from the environment, or from `test_config` alone when given.

    `test_config` holds the same variable names as the environment, plus
    optionally `CLOCK` (a callable returning an aware UTC datetime) and any
    Flask setting. Raises `ConfigError` with a one-line message on bad settings.
    """
    from .config import Settings

    source = dict(os.environ) if test_config is None else dict(test_config)
    clock: Callable[[], datetime] = source.pop("CLOCK", None) or (lambda: datetime.now(UTC))
    settings = Settings.from_env(source)

    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    if test_config is not None:
        app.config.from_mapping({k: v for k, v in source.items() if not _is_setting(k)})
    register_logging(app)
    register_services(app, settings, clock)
    register_blueprints(app)
    register_triggers(app, settings, clock)
    register_error_handlers(app)
    return app


def _is_setting(name: str) -> bool:
    return name.startswith(("SESSIONM_", "WALLET_PROXY_"))


def register_logging(app: Flask) -> None:
    """Plain lines on stderr unless the host (gunicorn, pytest) set logging up already."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    # urllib3 logs full URLs and, at debug, headers; keep it quiet.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def register_services(app: Flask, settings, clock: Callable[[], datetime]) -> None:
    """The wallet service and what it stands on, in `app.extensions`."""
    import time

    import redis

    from .answers import AnswerMemo
    from .cache import MemoryCache, RedisCache
    from .service import WalletService
    from .sessionm import ConnectClient, connect_timeout_for, pooled_session
    from .upstream import CircuitBreaker, UpstreamGuard

    client = ConnectClient(
        settings.sessionm_connect_url,
        settings.sessionm_connect_auth,
        settings.sessionm_retailer_id,
        session=pooled_session(settings.upstream_concurrency),
        connect_timeout=connect_timeout_for(settings.deadline),
        read_timeout=settings.upstream_timeout,
        clock=clock,
    )
    cache = MemoryCache(maxsize=settings.cache_max_entries, timer=lambda: clock().timestamp())
    redis_client = None
    if settings.redis_url:
        # Short timeouts: a slow Redis must not eat the answer's deadline.
        redis_client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=0.25,
            socket_connect_timeout=0.25,
            health_check_interval=15,
        )
        cache = RedisCache(redis_client, fallback=cache, timer=lambda: clock().timestamp())
    app.extensions["redis"] = redis_client
    app.extensions["answers"] = AnswerMemo()
    breaker = CircuitBreaker(
        threshold=settings.breaker_threshold,
        cooldown=settings.breaker_cooldown,
        timer=time.monotonic,
    )
    app.extensions["wallet_service"] = WalletService(
        client=client,
        cache=cache,
        guard=UpstreamGuard(concurrency=settings.upstream_concurrency, breaker=breaker),
        retailer_id=settings.sessionm_retailer_id,
        deadline=settings.deadline,
        upstream_timeout=settings.upstream_timeout,
        cache_ttl=settings.cache_ttl,
        stale_ttl=settings.stale_ttl,
        negative_ttl=settings.negative_ttl,
        clock=clock,
    )


def register_blueprints(app: Flask) -> None:
    from . import api, health, support, tags

    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(support.bp)
    tags.init_app(app)


def register_triggers(app: Flask, settings, clock: Callable[[], datetime]) -> None:
    """SessionM-triggered Braze messages: the outbox and `POST /v1/braze/triggers`."""
    from .triggers.setup import init_app

    init_app(app, settings, clock=lambda: clock().timestamp())


def register_error_handlers(app: Flask) -> None:
    from .errors import register_error_handlers as register

    register(app)
