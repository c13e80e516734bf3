"""Braze webhooks to SessionM customer tags: `POST /v1/users/<id>/tags` (and external ids).

Two modes (WALLET_PROXY_TAGS_MODE). `queued`, the default: each webhook is stored in the
outbox the triggers use, in a queue of its own, and answered 202; one worker per instance
applies the tags to SessionM Core at Core's budget, at most once each, so a webhook
campaign to a whole segment loses none. `direct`: SessionM is called while Braze waits
and its answer is Braze's.

Layout: `views` (the route, both modes), `model` (a tagging and its queue), `intake`
(accepting into the queue), `direct` (the direct relay), `worker` (applying), `setup`
(building it), `running` (one worker per instance), `commands` (the CLI).
docs/braze.md tells the story.
"""

from __future__ import annotations

from flask import Flask

from ..container import Services
from ..triggers import liveness
from ..triggers.running import STOP_WAIT
from ..triggers.setup import shared_outbox
from . import running
from .setup import EXTENSION, build_queued_tags
from .views import bp


def init_app(app: Flask, found: Services) -> None:
    """The route; in queued mode the outbox's tags queue behind it, this process's offer to
    be the instance's tags worker (a loop of the app, running.py), stopped with it, and its
    liveness in /readyz."""
    queued = None
    if found.settings.tags_queued:
        queued = build_queued_tags(found, shared_outbox(app, found))
    app.extensions[EXTENSION] = queued
    if queued is not None:
        worker = running.worker_loop(app)
        app.extensions[running.EXTENSION] = worker
        found.serve_with(worker, stop_wait=STOP_WAIT)
        found.add_readiness(liveness.readiness(queued.queue, found.unix_time))
    app.register_blueprint(bp)
