"""`create_app`: the one place the app is wired, step by step, each feature by its `init_app`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask

from . import api, health, logs, openapi, prometheus, request_log, support, tags, triggers
from .config import Settings
from .container import EXTENSION, Services, build_services, register
from .error_handlers import register_error_handlers
from .fast_hits import FastHits
from .forwarding import wire_front_proxies

# Each feature registers its blueprints and builds what only it uses (Flask's init_app).
FEATURES = (health, prometheus, openapi, api, support, tags, triggers)


def create_app(test_config: Mapping | None = None) -> Flask:
    """Build the app from the environment, or from `test_config` alone when given.

    `test_config` holds the same variable names as the environment, plus
    optionally `CLOCK` (a callable returning an aware UTC datetime) and any
    Flask setting. Raises `ConfigError` with a one-line message on bad settings.
    The app's threads, pools and files are closed by `close_app` (or when it is
    collected, or at exit).
    """
    source: dict[str, Any] = dict(os.environ if test_config is None else test_config)
    clock: Callable[[], datetime] = source.pop("CLOCK", None) or (lambda: datetime.now(UTC))
    settings = Settings.from_env(source)

    # No app-wide static folder (Flask's default route for it would only answer 404s): the
    # staff pages serve their own files.
    app = Flask("wallet_proxy", static_folder=None)
    if test_config is not None:
        app.config.from_mapping({k: v for k, v in source.items() if not _is_setting(k)})
    log = register_logging(app, settings)
    found = build_services(settings, clock)
    register(app, found)
    try:
        for feature in FEATURES:
            feature.init_app(app, found)
    except BaseException:
        found.close()
        raise
    register_error_handlers(app)
    if app.config.get("FAST_HITS", True):  # tests turn it off to run the same cases on Flask
        app.wsgi_app = FastHits(app.wsgi_app, found, log)  # type: ignore[method-assign]
    wire_front_proxies(app, settings)  # outermost: the fast path sees what Flask sees
    return app


def close_app(app: Flask) -> None:
    """Stop the app's threads and close its pools and files (a worker's exit, a test's end)."""
    found: Services | None = app.extensions.get(EXTENSION)
    if found is not None:
        found.close()


def _is_setting(name: str) -> bool:
    return name.startswith(("SESSIONM_", "WALLET_PROXY_"))


def register_logging(app: Flask, settings: Settings) -> request_log.RequestLog:
    """JSON lines (logs.py): records on stderr unless the host (gunicorn, pytest) set logging
    up already, and one line per request on stdout (request_log.py), hooked in first."""
    user_ids = logs.UserIds.from_settings(settings)
    logs.configure(user_ids)
    # urllib3 logs full URLs and, at debug, headers; keep it quiet.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return request_log.install(app, user_ids)
