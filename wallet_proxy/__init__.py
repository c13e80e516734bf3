"""wallet-proxy: SessionM offer wallets for Braze Connected Content."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask

from .version import __version__

__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from .config import Settings


def create_app(test_config: Mapping | None = None) -> Flask:
    """Build the app from the environment, or from `test_config` alone when given.

    `test_config` holds the same variable names as the environment, plus
    optionally `CLOCK` (a callable returning an aware UTC datetime) and any
    Flask setting. Raises `ConfigError` with a one-line message on bad settings.
    """
    from .config import Settings

    source: dict[str, Any] = dict(os.environ if test_config is None else test_config)
    clock: Callable[[], datetime] = source.pop("CLOCK", None) or (lambda: datetime.now(UTC))
    settings = Settings.from_env(source)

    # No app-wide static folder (Flask's default route for it would only answer 404s): the
    # staff pages serve their own files.
    app = Flask(__name__, static_folder=None)
    if test_config is not None:
        app.config.from_mapping({k: v for k, v in source.items() if not _is_setting(k)})
    register_logging(app, settings)
    register_front_proxies(app, settings)
    register_services(app, settings, clock)
    register_sessions(app, settings)
    register_blueprints(app)
    register_error_handlers(app)
    return app


def _is_setting(name: str) -> bool:
    return name.startswith(("SESSIONM_", "WALLET_PROXY_"))


def register_logging(app: Flask, settings: Settings) -> None:
    """JSON lines (logs.py): records on stderr unless the host (gunicorn, pytest) set logging
    up already, and one line per request on stdout (request_log.py), hooked in first."""
    from . import logs, request_log

    user_ids = logs.UserIds.from_settings(settings)
    logs.configure(user_ids)
    # urllib3 logs full URLs and, at debug, headers; keep it quiet.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    request_log.install(app, user_ids)


def register_front_proxies(app: Flask, settings: Settings) -> None:
    """Which X-Forwarded-For entries to believe (ProxyFix), and our public URL."""
    from .forwarding import wire_front_proxies

    wire_front_proxies(app, settings)


def register_services(app: Flask, settings: Settings, clock: Callable[[], datetime]) -> None:
    """Every service in one typed container, reached through `services()`."""
    from .services import EXTENSION, build_services

    app.extensions[EXTENSION] = build_services(settings, clock)


def register_sessions(app: Flask, settings: Settings) -> None:
    """Staff sessions: signed with WALLET_PROXY_SECRET_KEY (set whenever staff users are)."""
    from .support.staff import StaffSessionInterface

    if settings.secret_key:
        app.secret_key = settings.secret_key
    app.session_interface = StaffSessionInterface()


def register_blueprints(app: Flask) -> None:
    from . import api, health, openapi, prometheus, support, tags
    from .triggers import views as triggers

    app.register_blueprint(health.bp)
    app.register_blueprint(prometheus.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(support.bp)
    app.register_blueprint(tags.bp)
    app.register_blueprint(triggers.bp)


def register_error_handlers(app: Flask) -> None:
    from .errors import register_error_handlers as register

    register(app)
