"""SessionM-triggered Braze messages: accept a trigger, store it durably, deliver it once.

Layout: `schema` (the body SessionM posts), `properties` (its mapping to the flat
properties Liquid reads), `model` (a trigger and its outbox record), `outbox` (the
store's protocol and the one table of state moves) with `sqlite_outbox` and
`redis_outbox`, `intake` (accepting), `views` (the endpoint), `braze` (the client for
Braze's trigger endpoints), `deliverer` (batching, retries, rate limits), `wallets` (the
optional wallet summary), `setup` (building it), `running`
(one deliverer per instance), `commands` (the CLI). docs/triggers.md tells the story.
"""

from __future__ import annotations

from flask import Flask

from ..container import Services
from . import running
from .setup import EXTENSION, build_triggers, shared_outbox
from .views import bp


def init_app(app: Flask, found: Services) -> None:
    """The trigger route, the outbox and intake behind it, and this process's deliverer
    (started by the service's launcher, running.py); closed with the app."""
    triggers = None
    if found.settings.triggers_configured:
        outbox = shared_outbox(app, found)
        triggers = build_triggers(found.settings, outbox, found.unix_time, found.redis)
    app.extensions[EXTENSION] = triggers
    if triggers is not None:
        deliverer = running.deliverer_loop(app)
        app.extensions[running.EXTENSION] = deliverer
        found.on_close(lambda: deliverer.stop(running.STOP_WAIT))
    app.register_blueprint(bp)
