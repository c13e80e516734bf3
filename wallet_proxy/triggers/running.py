"""One deliverer per instance, whoever starts it: a gunicorn worker or `triggers deliver`.

Every gunicorn worker offers to deliver; an exclusive lock on DATA_DIR/deliverer.lock
lets exactly one do it. The kernel releases the lock when its holder dies, even by
kill -9, and another worker (or the replacement gunicorn starts) takes over within a
second. With Redis, each instance's deliverer shares the outbox with the others through
claims with leases; the lock only keeps it to one per instance.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flask import Flask

from ..background import Loop
from ..container import services
from ..files import open_private
from .deliverer import Deliverer
from .outbox import Outbox
from .setup import build_deliverer, triggers_of
from .sqlite_outbox import SqliteOutbox
from .wallets import ServiceWallets

log = logging.getLogger(__name__)

EXTENSION = "wallet_proxy.deliverer"  # the app's deliverer Loop, when triggers are configured

LOCK_FILE = "deliverer.lock"
LOCK_POLL = 1.0
# Inside gunicorn's graceful_timeout (10 s). A call still unanswered then is left at
# `sending` and becomes `unknown`: never lost, never sent twice.
STOP_WAIT = 8.0


class InstanceLock:
    """One holder per instance of a lock file in the data folder (`name`: the deliverer's,
    or another worker's, such as the tags worker's)."""

    def __init__(self, data_dir: str | Path, name: str = LOCK_FILE):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._fd = open_private(path / name, os.O_RDWR)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def wait(self, stop: threading.Event) -> bool:
        """Block until the lock is ours (True) or `stop` is set (False)."""
        while not self.try_acquire():
            if stop.wait(LOCK_POLL):
                return False
        return True

    def close(self) -> None:
        os.close(self._fd)  # also releases the lock


def deliverer_for(app: Flask) -> Deliverer | None:
    """A deliverer sharing the app's outbox and wallet service; None if not configured."""
    triggers = triggers_of(app)
    if triggers is None:
        return None
    found = services(app)
    return build_deliverer(
        found.settings,
        triggers.outbox,
        wallets=ServiceWallets(found.wallet_service, found.settings.default_culture),
        written=triggers.written,
        clock=found.unix_time,
    )


class QueueWorker(Protocol):
    """What works one of the outbox's queues: the deliverer, the tags worker."""

    outbox: Outbox
    clock: Callable[[], float]

    def run(self, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


def took_over(worker: QueueWorker) -> None:
    """Just became the instance's worker of its queue: settle what a dead predecessor left
    claimed."""
    if isinstance(worker.outbox, SqliteOutbox):
        worker.outbox.abandon_leases(now=worker.clock())
    # With Redis, other instances' claims are alive: their leases decide.


def work_alone(
    worker: QueueWorker | None, data_dir: str, lock_name: str, stop: threading.Event
) -> None:
    """Wait to hold `lock_name` (one holder per instance), then run `worker` until `stop`
    is set; nothing when there is no worker (its feature is off)."""
    if worker is None:
        return
    lock = InstanceLock(data_dir, lock_name)
    try:
        if lock.wait(stop):
            took_over(worker)
            worker.run(stop)
    finally:
        lock.close()
        worker.close()


def deliver(app: Flask, stop: threading.Event) -> None:
    """Wait to be this instance's deliverer, then deliver until `stop` is set."""
    work_alone(deliverer_for(app), services(app).settings.data_dir, LOCK_FILE, stop)


def deliverer_loop(app: Flask) -> Loop:
    """This process's offer to be the instance's deliverer, not yet started."""
    return Loop("trigger-deliverer", functools.partial(deliver, app))


def start_in_worker(app: object) -> None:
    """For gunicorn's post_worker_init: offer this worker as the instance's deliverer.

    `app` is whatever gunicorn serves; only our Flask app with triggers configured delivers.
    """
    if isinstance(app, Flask) and isinstance(app.extensions.get(EXTENSION), Loop):
        app.extensions[EXTENSION].start()
