"""One tags worker per instance, whoever starts it: a gunicorn worker, as the trigger
deliverer is (triggers/running.py), with a lock file of its own in the data folder.

Every gunicorn worker offers to apply the queued tags; the lock lets exactly one do it,
and another takes over within a second when its holder dies, even by kill -9.
"""

from __future__ import annotations

import functools
import threading

from flask import Flask

from ..background import Loop
from ..container import services
from ..triggers.running import work_alone
from .setup import build_worker, queued_tags_of
from .worker import TagsWorker

EXTENSION = "wallet_proxy.tags_worker"  # the app's worker Loop, when the tags are queued
LOCK_FILE = "tags-worker.lock"


def worker_for(app: Flask) -> TagsWorker | None:
    """A worker sharing the app's tags queue and Core client; None in direct mode."""
    queued = queued_tags_of(app)
    if queued is None:
        return None
    return build_worker(services(app), queued.queue)


def work(app: Flask, stop: threading.Event) -> None:
    """Wait to be this instance's tags worker, then apply tags until `stop` is set."""
    work_alone(worker_for(app), services(app).settings.data_dir, LOCK_FILE, stop)


def worker_loop(app: Flask) -> Loop:
    """This process's offer to be the instance's tags worker, not yet started."""
    return Loop("tags-worker", functools.partial(work, app))


def start_in_worker(app: object) -> None:
    """For gunicorn's post_worker_init: offer this worker as the instance's tags worker."""
    if isinstance(app, Flask) and isinstance(app.extensions.get(EXTENSION), Loop):
        app.extensions[EXTENSION].start()
