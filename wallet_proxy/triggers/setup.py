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

import redis
from flask import Flask, current_app

from ..attributes.written import WrittenStore, WrittenStoreError, written_store
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
    written: WrittenStore  # what the deliverer last wrote to profiles (enrich: attributes)


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
            shared = RedisOutbox.from_url(settings.redis_url, max_bytes=settings.trigger_max_bytes)
            for warning in persistence_warnings(shared.client):
                log.warning(warning)
            return shared
        return SqliteOutbox(settings.data_dir, max_bytes=settings.trigger_max_bytes)
    except (OSError, OutboxError) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            "WALLET_PROXY_DATA_DIR", f"can't hold the outbox or its workers' locks: {problem}"
        ) from None


def outbox_of(app: Flask | None = None) -> Outbox | None:
    """The outbox of `app` (or of the current request's), None when no feature uses it."""
    found: Outbox | None = (app or current_app).extensions.get(OUTBOX)
    return found


def shared_outbox(app: Flask, found: Services) -> Outbox:
    """The app's outbox, opened by the first feature that asks and closed with the app."""
    outbox: Outbox | None = app.extensions.get(OUTBOX)
    if outbox is None:
        outbox = open_outbox(found.settings)
        app.extensions[OUTBOX] = outbox
        found.on_close(outbox.close)
    return outbox


def build_triggers(
    settings: Settings,
    outbox: Outbox,
    unix_time: Callable[[], float],
    redis_client: redis.Redis | None,
) -> Triggers:
    """The triggers' intake on the outbox (its triggers' queue), and the store of the
    attributes the deliverer writes to profiles (`enrich: ["attributes"]`)."""
    try:
        written = written_store(redis_client, settings.data_dir, unix_time)
    except WrittenStoreError as error:
        raise ConfigError(
            "WALLET_PROXY_DATA_DIR", f"can't hold the attributes written to Braze: {error}"
        ) from None
    intake = Intake(
        outbox,
        max_queued=settings.trigger_max_queued,
        set_email=settings.trigger_set_email,
        email_prioritization=settings.trigger_email_prioritization,
        clock=unix_time,
    )
    return Triggers(outbox, intake, settings.trigger_keys, written)


def build_deliverer(
    settings: Settings,
    outbox: Outbox,
    *,
    wallets: Wallets | None = None,
    written: WrittenStore | None = None,
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
        written=written,
        clock=clock,
    )
