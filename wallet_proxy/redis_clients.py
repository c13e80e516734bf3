"""Redis clients, one named profile per use, and one way for a process to decide Redis is down.

Every client is made by `connect(url, profile)`; the profile states its timeouts:

- RENDER: everything on the request path (the wallet cache, single-flight coordination,
  the SessionM budget, staff sessions, Idempotency-Key records). A slow Redis must not
  eat Braze's deadline: 0.25 s to connect and to answer.
- OUTBOX: the durable trigger outbox, as the deliverer and the commands use it. A slow
  answer is better than a step of delivery lost: 2 s to connect, 5 s to answer.
- TRIGGER_INTAKE: storing a trigger while its sender waits, within 2 s (the outbox's
  ADD_BOUND): 0.25 s to connect, 0.5 s to answer. A write whose answer doesn't come is
  read back once on another connection when the bound leaves time for it (connecting,
  the handshake and the read: 1.25 s), so the sender learns whether it was stored;
  Redis normally answers in a millisecond, and a stall past 0.5 s costs a retry, which
  the outbox recognises as a repeat.
- COMMAND: a command a person runs (check-config's PING): 1 s each.

No profile retries a command. redis-py retries up to 10 times by default, which would
hold a render for seconds while Redis is down, and could run a script that is not
idempotent (the budget's booking, an outbox write) twice after a timeout: whether to try
again is the caller's decision.

Whether a command was sent is known: a connection that could not be made (refused,
unreachable, no answer to its handshake) raises `RedisNotConnected`. `RedisHealth` uses
that to decide, for everything in a process that has a local fallback, when to use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    connect_timeout: float  # seconds to connect
    answer_timeout: float  # seconds for each command's answer, and for the handshake's
    max_connections: int  # per process


# redis-py caps a pool at 100 connections by default: fewer than a worker's request threads
# and their flights together, when SessionM's budget keeps many of them waiting.
RENDER = Profile("render", connect_timeout=0.25, answer_timeout=0.25, max_connections=512)
OUTBOX = Profile("outbox", connect_timeout=2.0, answer_timeout=5.0, max_connections=64)
COMMAND = Profile("command", connect_timeout=1.0, answer_timeout=1.0, max_connections=4)
TRIGGER_INTAKE = Profile(
    "trigger-intake", connect_timeout=0.25, answer_timeout=0.5, max_connections=64
)


class RedisNotConnected(redis.ConnectionError):
    """The connection to Redis could not be made: no command was sent."""


def connect(url: str, profile: Profile) -> redis.Redis:
    """A client for `url` (redis://, rediss:// or unix://) with `profile`'s timeouts."""
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=profile.connect_timeout,
        socket_timeout=profile.answer_timeout,
        health_check_interval=15,
        max_connections=profile.max_connections,
        retry=Retry(NoBackoff(), 0),
    )
    pool = client.connection_pool
    pool.connection_class = _telling(pool.connection_class)
    return client


_telling_classes: dict[type[Any], type[Any]] = {}


def _telling(connection_class: type[Any]) -> type[Any]:
    """`connection_class`, whose failure to connect says no command was sent."""
    made = _telling_classes.get(connection_class)
    if made is None:

        def connect(self: Any) -> None:
            try:
                connection_class.connect(self)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                raise RedisNotConnected(str(error)) from error

        made = type(
            f"Telling{connection_class.__name__}", (connection_class,), {"connect": connect}
        )
        _telling_classes[connection_class] = made
    return made


class RedisHealth:
    """Whether this process uses Redis now, or the local fallbacks of what it keeps there.

    One per Redis client, shared by the wallet cache and the SessionM budget:

    - A failure before any command was sent (`RedisNotConnected`: refused, unreachable,
      no handshake) can't have changed anything: Redis is down at once, and stays so
      for RETRY_INTERVAL before it is tried again.
    - A failure after the command was sent (a reset, a timeout) may have changed
      something: the budget's script may have booked a request. Then Redis is not
      asked again for RETRY_INTERVAL (nothing waits on it meanwhile), but it is taken
      as down, so that the budget falls back to its own share, only once failures have
      lasted FALL_BACK_AFTER without a success: a moment's stall on a busy host must
      not add a local budget to the fleet's.

    A read (the cache) may use local copies whenever Redis is not asked; the budget uses
    its local share only while `down`.
    """

    RETRY_INTERVAL = 1.0
    FALL_BACK_AFTER = 2.0

    def __init__(
        self,
        *,
        timer: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] = lambda: None,
    ):
        self.timer = timer
        self.on_failure = on_failure  # counts each failure (a metric, set by the container)
        self._lock = threading.Lock()
        self._skip_until = 0.0  # Redis is not asked before this instant
        self._failing_since: float | None = None  # the first failure since the last success
        self._down = False

    def usable(self) -> bool:
        """Whether to ask Redis now."""
        return self.timer() >= self._skip_until

    @property
    def down(self) -> bool:
        """Whether local fallbacks stand in for Redis (also those that could double-count)."""
        return self._down

    def failed(self, error: Exception) -> None:
        self.on_failure()
        now = self.timer()
        with self._lock:
            if self._failing_since is None:
                self._failing_since = now
            self._skip_until = now + self.RETRY_INTERVAL
            never_sent = isinstance(error, RedisNotConnected)
            if self._down or not (never_sent or now - self._failing_since >= self.FALL_BACK_AFTER):
                return
            self._down = True
        log.warning(
            "Redis unavailable (%s): this process uses its own cache and its share of the "
            "SessionM budgets until Redis is back",
            type(error).__name__,
        )

    def succeeded(self) -> None:
        if self._failing_since is None:
            return
        with self._lock:
            was_down, self._down = self._down, False
            self._failing_since = None
            self._skip_until = 0.0
        if was_down:
            log.warning("Redis is back: the cache and the SessionM budgets are shared again")
