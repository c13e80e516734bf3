"""One deliverer per instance, whoever starts it: a gunicorn worker or `triggers deliver`.

Every gunicorn worker offers to deliver; an exclusive lock on DATA_DIR/deliverer.lock
lets exactly one do it. The kernel releases the lock when its holder dies, even by
kill -9, and another worker (or the replacement gunicorn starts) takes over within a
second. With Redis, each instance's deliverer shares the outbox with the others through
claims with leases; the lock only keeps it to one per instance.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

from ..files import open_private
from ..services import EXTENSION, services

if TYPE_CHECKING:  # imported where used: a worker of a service without Braze never loads them
    from .deliverer import Deliverer

log = logging.getLogger(__name__)

LOCK_FILE = "deliverer.lock"
LOCK_POLL = 1.0
# Inside gunicorn's graceful_timeout (10 s). A call still unanswered then is left at
# `sending` and becomes `unknown`: never lost, never sent twice.
STOP_WAIT = 8.0


class InstanceLock:
    def __init__(self, data_dir: str | Path):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._fd = open_private(path / LOCK_FILE, os.O_RDWR)

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
    from .setup import build_deliverer
    from .wallets import ServiceWallets

    found = services(app)
    if found.triggers is None:
        return None
    return build_deliverer(
        found.settings,
        found.triggers.outbox,
        wallets=ServiceWallets(found.wallet_service, found.settings.default_culture),
        clock=lambda: found.clock().timestamp(),
    )


def took_over(deliverer: Deliverer) -> None:
    """Just became the instance's deliverer: settle what a dead predecessor left claimed."""
    from .sqlite_outbox import SqliteOutbox

    if isinstance(deliverer.outbox, SqliteOutbox):
        deliverer.outbox.abandon_leases(now=deliverer.clock())
    # With Redis, other instances' claims are alive: their leases decide.


def deliver(app: Flask, stop: threading.Event) -> None:
    """Wait to be this instance's deliverer, then deliver until `stop` is set."""
    deliverer = deliverer_for(app)
    if deliverer is None:
        return
    lock = InstanceLock(services(app).settings.data_dir)
    try:
        if lock.wait(stop):
            took_over(deliverer)
            deliverer.run(stop)
    finally:
        lock.close()


class Background:
    """A deliverer thread in this process (a gunicorn worker), and how to stop it."""

    def __init__(self, app: Flask):
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=deliver, args=(app, self.stop), name="trigger-deliverer", daemon=True
        )

    def start(self) -> Background:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(STOP_WAIT)


_background: Background | None = None


def start_in_worker(app: object) -> None:
    """For gunicorn's post_worker_init: offer this worker as the instance's deliverer.

    `app` is whatever gunicorn serves; only our Flask app with triggers configured delivers.
    """
    global _background
    if not isinstance(app, Flask) or EXTENSION not in app.extensions:
        return  # another app served by our gunicorn config (the benchmarks' bare one)
    if services(app).triggers is not None and _background is None:
        _background = Background(app).start()


def stop_in_worker() -> None:
    """For gunicorn's worker_exit: finish the call in flight, then let the lock go."""
    global _background
    if _background is not None:
        _background.close()
        _background = None
