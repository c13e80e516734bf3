"""Building the triggers feature (its intake on the outbox), and a deliverer on demand.

The outbox is the instance's one store of queued items (the triggers', the queued tags'):
the first feature that needs it opens it (`shared_outbox`). Without BRAZE_REST_URL the
trigger route answers 503 not_configured and the triggers need no data folder.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app

from ..config import ConfigError, Settings
from ..container import Services
from .braze import BrazeClient
from .deliverer import Deliverer, Wallets
from .intake import Intake
from .outbox import Outbox, OutboxError
from .redis_outbox import RedisOutbox, persistence_warnings
from .sqlite_outbox import SqliteOutbox

log = logging.getLogger(__name__)


EXTENSION = "wallet_proxy.triggers"
OUTBOX = "wallet_proxy.outbox"  # the app's outbox, whichever feature opened it


@dataclass(frozen=True)
class Triggers:
    """What the route and the deliverer share in one process."""

    outbox: Outbox
    intake: Intake
    keys: tuple[str, ...]


def triggers_of(app: Flask | None = None) -> Triggers | None:
    """The triggers of `app` (or of the current request's), None when not configured."""
    found: Triggers | None = (app or current_app).extensions[EXTENSION]
    return found


def open_outbox(settings: Settings) -> Outbox:
    """Redis when the service has one (every instance shares it), else SQLite in the data
    folder. Raises ConfigError naming the variable when the store can't be opened."""
    try:
        if settings.redis_url:
            # The folder still holds the lock that keeps one deliverer per instance.
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True, mode=0o750)
            if not os.access(settings.data_dir, os.W_OK):
                raise OSError(errno.EACCES, "not writable")
            shared = RedisOutbox.from_url(settings.redis_url)
            for warning in persistence_warnings(shared.client):
                log.warning(warning)
            return shared
        return SqliteOutbox(settings.data_dir)
    except (OSError, OutboxError) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            "WALLET_PROXY_DATA_DIR", f"can't hold the outbox or its workers' locks: {problem}"
        ) from None


def shared_outbox(app: Flask, found: Services) -> Outbox:
    """The app's outbox, opened by the first feature that asks and closed with the app."""
    outbox: Outbox | None = app.extensions.get(OUTBOX)
    if outbox is None:
        outbox = open_outbox(found.settings)
        app.extensions[OUTBOX] = outbox
        found.on_close(outbox.close)
    return outbox


def build_triggers(settings: Settings, outbox: Outbox, unix_time: Callable[[], float]) -> Triggers:
    """The triggers' intake on the outbox (its triggers' queue)."""
    intake = Intake(
        outbox,
        max_queued=settings.trigger_max_queued,
        set_email=settings.trigger_set_email,
        email_prioritization=settings.trigger_email_prioritization,
        clock=unix_time,
    )
    return Triggers(outbox, intake, settings.trigger_keys)


def build_deliverer(
    settings: Settings,
    outbox: Outbox,
    *,
    wallets: Wallets | None = None,
    clock: Callable[[], float],
) -> Deliverer:
    if not settings.braze_rest_url or not settings.braze_rest_api_key:
        raise ConfigError("BRAZE_REST_URL", "required to deliver triggers")
    return Deliverer(
        outbox,
        BrazeClient(settings.braze_rest_url, settings.braze_rest_api_key),
        window=settings.trigger_batch_ms / 1000,
        max_age=settings.trigger_max_age,
        wallets=wallets,
        clock=clock,
    )
