"""The loop every worker of an outbox queue runs (the trigger deliverer, the tags worker):
its own work one batch at a time, and around it what the queue needs: its depth, the
outbox's size and its disk for the metrics every second, old items purged every minute,
store failures logged and waited out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .. import metrics
from .model import WAITING
from .outbox import Outbox, OutboxError

log = logging.getLogger(__name__)

DEPTH_EVERY = 1.0  # seconds between readings of the queue's depth (and more) for the metrics
PURGE_EVERY = 60.0
FAILURE_WAIT = 1.0


def keep_working(
    name: str,
    stop: threading.Event,
    run_once: Callable[[], int],
    outbox: Outbox,
    *,
    depth: Callable[[int], None],
    idle_wait: Callable[[], float],
    clock: Callable[[], float],
) -> None:
    """Call `run_once` (the number of items it handled) until `stop` is set, waiting
    `idle_wait()` seconds after a round that handled none; `depth` gets the queue's
    waiting items. `name` says whose lines the log's are."""
    last_purge = last_depth = 0.0
    while not stop.is_set():
        try:
            handled = run_once()
            now = clock()
            if now - last_depth >= DEPTH_EVERY:
                counts = outbox.counts()
                depth(sum(counts[state] for state in WAITING))
                metrics.outbox_bytes(sum(outbox.usage().values()))
                outbox.checks()  # the disk's metrics, with or without readiness probes
                last_depth = now
            if now - last_purge >= PURGE_EVERY:
                removed = outbox.purge(now=now)
                if removed:
                    log.info("%s: purged %d old items", name, removed)
                last_purge = now
        except OutboxError as exc:
            log.warning("%s: %s; retrying in 1 s", name, exc)
            stop.wait(FAILURE_WAIT)
            continue
        except Exception:
            log.exception("%s failed; retrying in 1 s", name)
            stop.wait(FAILURE_WAIT)
            continue
        if not handled:
            stop.wait(idle_wait())
