"""Whether a queue's items are going out (the triggers, the queued tags): how long the oldest
has waited, and when its worker last showed life (its heartbeat in the outbox).

A running deliverer notes the time in the outbox every 10 s (upkeep.py, the loop of every
queue's worker), whichever process runs it, `triggers deliver` included. Triggers that
have waited over STALL_AFTER while no deliverer beat that recently are stalled: nothing
delivers them. That is shown (the `triggers` check of /readyz, `wallet-proxy triggers
status`, the oldest trigger's age in the metrics) but never takes the instance out of
service: with the outbox in Redis every instance would fail its probe at once, and
Connected Content would stop with them (health.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import metrics
from .outbox import Outbox, OutboxError

STALL_AFTER = 60.0  # six heartbeats missed
STALLED = "stalled"


@dataclass(frozen=True)
class Delivery:
    """Seconds the oldest queued trigger has waited and since a deliverer's last heartbeat
    (None: nothing waits; no heartbeat ever)."""

    oldest_wait: float | None
    since_beat: float | None

    @property
    def alive(self) -> bool:
        """A deliverer showed life within STALL_AFTER."""
        return self.since_beat is not None and self.since_beat <= STALL_AFTER

    @property
    def stalled(self) -> bool:
        return self.oldest_wait is not None and self.oldest_wait > STALL_AFTER and not self.alive


def delivery(outbox: Outbox, now: float) -> Delivery:
    """Read from the outbox; raises OutboxError."""
    oldest, beat = outbox.oldest_queued(), outbox.last_beat()
    return Delivery(
        None if oldest is None else max(0.0, now - oldest),
        None if beat is None else max(0.0, now - beat),
    )


def readiness(outbox: Outbox, unix_time: Callable[[], float]) -> Callable[[], dict[str, str]]:
    """The check of /readyz named after the queue (`triggers`, `tags`): `ok`, `stalled`, or
    the outbox can't be read."""
    name = outbox.queue.name

    def check() -> dict[str, str]:
        try:
            stalled = delivery(outbox, unix_time()).stalled
        except OutboxError:
            return {name: "outbox unreadable"}
        return {name: STALLED if stalled else "ok"}

    return check


def oldest_wait_gauge(outbox: Outbox, unix_time: Callable[[], float]) -> Callable[[], None]:
    """Before a scrape: the oldest waiting trigger's age, read now, so that it rises while
    no deliverer runs to report anything."""

    def read() -> None:
        try:
            found = delivery(outbox, unix_time())
        except OutboxError:
            return
        metrics.trigger_oldest_wait(found.oldest_wait or 0.0)

    return read
