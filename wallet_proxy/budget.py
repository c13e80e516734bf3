"""One request budget per SessionM API for the whole fleet, kept in Redis.

`WALLET_PROXY_SESSIONM_RATE` is what SessionM Connect may receive per second from
every process sharing `WALLET_PROXY_REDIS_URL` together (Core has its own). Each
HTTP request, so each page of a paged wallet, asks the budget first.

The budget is GCRA (the generic cell rate algorithm): one "theoretical arrival
time" (TAT) per stream, moved on by 1/rate per request, checked and moved in a
Lua script so processes can't race, on Redis's own clock so hosts' clocks don't
matter. The burst tolerance is 0.05 s worth of requests minus one.

A request first books its slot (FIFO, which is what makes a queue, a deadline
check and a Retry-After possible), sleeps until then, and checks in again at the
moment it is sent: a sliding window over what is really sent, so threads that
wake late on a busy machine can't go out in a bunch, yet lose nothing when they
do wake late; and the pause. The promise is at most 1.1 x the rate in any sliding
second at SessionM. A request reaches SessionM a little after its check-in (Redis's
answer coming back, the GIL, the network): up to SEND_SPREAD later, measured on a
busy 2-core host (bench/campaign.py, docs/benchmarks.md). So the window is 1 s +
SEND_SPREAD long and holds 1.1 x the rate: whatever second SessionM looks at, its
requests were checked in within one such window. Bookings are spaced to match
(`paced_rate`): 1.1 / 1.2, about 92 % of the rate, is what the budget sustains.

Who goes first when the budget is short, without a scheduler:

- WAITING (a render waiting for its answer) may use the whole rate and queues: it
  books the next slot if that comes before its claim's `wait_until` (for a render,
  two thirds into its deadline) and sleeps until then; if not, it is refused with
  the queue's length, which becomes Retry-After.
- BULK (`warm`, `tags import`) and REFRESH (a stale entry's background refresh)
  never queue: they go only when the shared stream has room now, so they never
  push a waiting render back, and their own stream caps them at a share of the
  rate (80 % and 50 % by default). A refused refresh is skipped; bulk work sleeps
  the time the script says and asks again, until its patience runs out.

SessionM's own 429 pauses every process (`pause`): the pause is a Redis key the
script honours.

When Redis is down, each process falls back to an in-process budget of rate / N, N
being the fleet size last reported in Redis (every process reports itself every few
seconds), else `WALLET_PROXY_FLEET_SIZE`, else 1, and asks Redis again a second later.
When Redis is down is decided by the process's `RedisHealth` (redis_clients.py), which
the wallet cache shares:

- a connection refused or never made: no script ran, so the process falls back at once
  (a render is never refused for a Redis that is plainly gone);
- a reset or a timeout after the script was sent: it may have booked the request, and a
  process on its own budget while the others are on Redis's adds to the fleet's rate.
  Such a failure only refuses the request, with a message naming Redis, and Redis is
  not asked again for a second (no render waits on it meanwhile); the process falls
  back once failures have lasted RedisHealth.FALL_BACK_AFTER (2 s) without a success.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import redis

from .background import Loop
from .errors import UpstreamBusy
from .redis_clients import RedisHealth

log = logging.getLogger(__name__)

BURST_SECONDS = 0.05  # the burst allowance: this many seconds' worth of requests at once
PROMISE = 1.1  # SessionM sees at most this x the rate in any sliding second
SEND_SPREAD = 0.2  # seconds from a check-in to SessionM the promise allows for
CHECK_IN_WINDOW = 1.0 + SEND_SPREAD  # seconds over which the check-in counts sends
FLEET_REPORT_INTERVAL = 5.0  # each process says it is alive this often
FLEET_WINDOW = 30.0  # and counts in the fleet size this long after its last report
OVER_BUDGET = "SessionM's request budget is used up for now; try again shortly."
REDIS_STALLED = (
    "SessionM's request budget is kept in Redis, which is not answering; try again shortly."
)


class Priority(enum.Enum):
    WAITING = "waiting"  # someone is waiting for the answer: the whole rate, may queue
    BULK = "bulk"  # warm, tags import: a share of the rate, only when nobody queues
    REFRESH = "refresh"  # a stale entry's background refresh: a share, now or never


@dataclass(frozen=True, slots=True)
class Claim:
    """One request's standing: its priority and until when it may wait for budget."""

    priority: Priority = Priority.WAITING
    wait_until: float | None = None  # a time.monotonic() instant; None: only if there is room now


NO_WAIT = Claim()  # the default: a request that goes if there is room now, else is refused


class Budget(Protocol):
    """Requests per second to one SessionM API; see the module docstring."""

    rate: float  # 0: no budget

    def acquire(self, claim: Claim) -> None:
        """Return when one request may be sent; raise `UpstreamBusy`, with the Retry-After
        the queue needs, when that can't be before `claim.wait_until`."""
        ...

    def pause(self, seconds: float) -> None:
        """SessionM answered 429: nobody sends for `seconds`."""
        ...


class Unlimited:
    """No budget (`WALLET_PROXY_SESSIONM_RATE=0`): every request goes at once."""

    rate = 0.0

    def acquire(self, claim: Claim) -> None:
        pass

    def pause(self, seconds: float) -> None:
        pass


UNLIMITED = Unlimited()


@dataclass(frozen=True, slots=True)
class _Decision:
    admitted: bool
    wait: float  # admitted: sleep this long first; refused: how long the queue is


def _refusal(wait: float) -> UpstreamBusy:
    return UpstreamBusy(OVER_BUDGET, retry_after=max(1, math.ceil(wait)))


@dataclass(frozen=True, slots=True)
class _CheckIn:
    paused: float  # > 0: a pause began since the booking; it lasts this long
    wait: float  # > 0: the last second's sends are at the limit; go after this long


class _Pacer:
    """`acquire` around the two decisions (book, check in): sleeping to the booked slot,
    the bulk retries, booking again after a pause. Shared by the local and Redis budgets."""

    rate: float
    timer: Callable[[], float]
    sleep: Callable[[float], None]

    def _decide(self, priority: Priority, patience: float) -> _Decision:
        raise NotImplementedError

    def _check_in(self) -> _CheckIn:
        raise NotImplementedError

    def acquire(self, claim: Claim) -> None:
        queues = claim.priority is Priority.WAITING
        while True:
            now = self.timer()
            patience = 0.0 if claim.wait_until is None else claim.wait_until - now
            decision = self._decide(claim.priority, max(0.0, patience) if queues else -1.0)
            if not decision.admitted:
                if queues or decision.wait > patience:
                    raise _refusal(decision.wait)
                # Bulk and refresh never queue: come back when there is room, spread over
                # one interval so waiting workers don't all ask at once.
                self.sleep(decision.wait + random.uniform(0, 1 / self.rate))
                continue
            if decision.wait > 0:
                self.sleep(decision.wait)
            if self._sent():
                return
            # SessionM said 429 to someone meanwhile: book again, after the pause.

    def _sent(self) -> bool:
        """Check in at the moment of sending; False if a pause began since the booking."""
        while True:
            check = self._check_in()
            if check.paused > 0:
                return False
            if check.wait <= 0:
                return True
            self.sleep(check.wait)


@dataclass
class _Streams:
    """GCRA state of one process (the local budget): instants of `timer`."""

    tat: float = 0.0
    by_priority: dict[Priority, float] = field(default_factory=dict)
    sent: deque[float] = field(default_factory=deque)  # when requests went, the last second
    paused_until: float = 0.0


class LocalBudget(_Pacer):
    """The budget in this process only: without Redis, or while Redis fails."""

    def __init__(
        self,
        rate: float,
        shares: Mapping[Priority, float],
        *,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        busy: bool = False,
    ):
        """`busy`: start as if just used at the full rate (no burst when taking over)."""
        self.rate = rate
        self.shares = dict(shares)
        self.timer = timer
        self.sleep = sleep
        self._state = _Streams(tat=timer() + 1 / paced_rate(rate) if busy else 0.0)
        self._lock = threading.Lock()

    def _decide(self, priority: Priority, patience: float) -> _Decision:
        interval = 1 / paced_rate(self.rate)
        tolerance = tolerance_for(interval)
        with self._lock:
            now, state = self.timer(), self._state
            slot = max(now, state.tat - tolerance, state.paused_until)
            if patience >= 0:
                wait = slot - now
                if wait > patience:
                    return _Decision(False, wait)
                state.tat = max(state.tat, slot) + interval
                return _Decision(True, wait)
            class_interval = interval / self.shares[priority]
            class_tat = state.by_priority.get(priority, 0.0)
            class_slot = max(now, class_tat - tolerance_for(class_interval))
            wait = max(slot, class_slot) - now
            if wait > 0:
                return _Decision(False, wait)
            state.tat = max(state.tat, now) + interval
            state.by_priority[priority] = max(class_tat, now) + class_interval
            return _Decision(True, 0.0)

    def _check_in(self) -> _CheckIn:
        with self._lock:
            now, state = self.timer(), self._state
            if state.paused_until > now:
                return _CheckIn(state.paused_until - now, 0.0)
            while state.sent and state.sent[0] <= now - CHECK_IN_WINDOW:
                state.sent.popleft()
            if len(state.sent) >= window_limit(self.rate):
                return _CheckIn(0.0, state.sent[0] + CHECK_IN_WINDOW - now)
            state.sent.append(now)
            return _CheckIn(0.0, 0.0)

    def paused_for(self) -> float:
        with self._lock:
            return self._state.paused_until - self.timer()

    def pause(self, seconds: float) -> None:
        with self._lock:
            until = self.timer() + seconds
            self._state.paused_until = max(self._state.paused_until, until)


def window_limit(rate: float) -> int:
    """Requests that may go in any CHECK_IN_WINDOW (the burst is in the booking)."""
    return max(1, math.floor(rate * PROMISE))


def paced_rate(rate: float) -> float:
    """Requests/s the budget books at: what the check-in window lets through, sustained."""
    return min(rate, window_limit(rate) / CHECK_IN_WINDOW)


def tolerance_for(interval: float) -> float:
    """GCRA's burst tolerance: BURST_SECONDS' worth of requests, the first one included."""
    return max(0.0, BURST_SECONDS - interval)


# KEYS: shared TAT, this priority's TAT, pause, fleet. ARGV (microseconds): interval,
# tolerance, patience (-1: never queue), class interval, class tolerance. Returns
# {admitted 0/1, wait in microseconds}.
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance, patience = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
local slot = math.max(now, tat - tolerance, pause)
local function store(key, value)
  redis.call('SET', key, string.format('%.0f', value), 'PX',
             math.ceil((value - now) / 1000) + 1000)
end
if patience >= 0 then
  local wait = slot - now
  if wait > patience then return {0, wait} end
  store(KEYS[1], math.max(tat, slot) + interval)
  return {1, wait}
end
local class_interval, class_tolerance = tonumber(ARGV[4]), tonumber(ARGV[5])
local class_tat = tonumber(redis.call('GET', KEYS[2]) or '0')
local wait = math.max(slot, now, class_tat - class_tolerance) - now
if wait > 0 then return {0, wait} end
store(KEYS[1], math.max(tat, now) + interval)
store(KEYS[2], math.max(class_tat, now) + class_interval)
return {1, 0}
"""

# KEYS: sent (a sorted set of the last window's sends), pause, peak. ARGV: the window's
# limit, a unique member, the window in microseconds. Returns {paused, wait} in
# microseconds. `peak` keeps the busiest second the budget has let go (for monitoring:
# what SessionM sees adds the way there).
_CHECK_IN = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return {pause - now, 0} end
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * window / 1000))
local sent = redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now - 1000000), '+inf')
if sent > tonumber(redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], sent, 'EX', 86400)
end
return {0, 0}
"""

# KEYS: pause. ARGV: microseconds. The key holds the instant the pause ends, and expires then.
_PAUSE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ends = now + tonumber(ARGV[1])
if ends > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.0f', ends), 'PX',
             math.max(1, math.ceil(tonumber(ARGV[1]) / 1000)))
end
"""

# KEYS: fleet. ARGV: member, window in microseconds. Returns the fleet size.
_REPORT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) / 1000))
return redis.call('ZCARD', KEYS[1])
"""


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


class Fleet:
    """How many processes share the budgets: each reports itself to Redis every few
    seconds from a loop of its own, and reads the count back. The count is what each
    process divides the rate by when Redis fails.

    The loop is started by `touch`, in each process that uses the budget, and ends with
    `stop` or once the Fleet is dropped (an app dropped, as tests do).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        configured: int | None,
        prefix: str = "wallet-proxy:budget",
    ):
        self.client = client
        self.key = f"{prefix}:fleet"
        self.size = configured or 1
        self._report = client.register_script(_REPORT)
        self._nonce = secrets.token_hex(4)
        self._loop = Loop(
            "wallet-proxy-fleet", functools.partial(_keep_reporting, weakref.ref(self))
        )

    @property
    def member(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{self._nonce}"

    def touch(self) -> None:
        """Make sure this process reports itself (cheap once it does)."""
        if not self._loop.running:
            self.report()
            self._loop.start()

    def stop(self, timeout: float) -> bool:
        return self._loop.stop(timeout)

    def report(self) -> None:
        try:
            window = _micros(FLEET_WINDOW)
            self.size = int(self._report(keys=[self.key], args=[self.member, window]))
        except redis.RedisError as error:
            log.debug("fleet report failed: %s", type(error).__name__)


def _keep_reporting(fleet_ref: weakref.ref[Fleet], stop: threading.Event) -> None:
    """Report until stopped, or until the Fleet is gone."""
    while not stop.wait(FLEET_REPORT_INTERVAL):
        fleet = fleet_ref()
        if fleet is None:
            return
        fleet.report()
        del fleet


class SharedBudget(_Pacer):
    """The fleet's budget in Redis; a LocalBudget of rate / fleet size while Redis fails."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        rate: float,
        shares: Mapping[Priority, float],
        fleet: Fleet,
        *,
        health: RedisHealth,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        prefix: str = "wallet-proxy:budget",
    ):
        self.client = client
        self.name = name
        self.health = health
        self.rate = rate
        self.shares = dict(shares)
        self.fleet = fleet
        self.timer = timer
        self.sleep = sleep
        tag = f"{prefix}:{{{name}}}"  # one hash tag: every key on one Redis Cluster slot
        self._tat_key = f"{tag}:tat"
        self._sent_key = f"{tag}:sent"
        self.peak_key = f"{tag}:peak"  # the busiest second let go, kept a day
        self._pause_key = f"{tag}:pause"
        self._acquire = client.register_script(_ACQUIRE)
        self._check = client.register_script(_CHECK_IN)
        self._pause = client.register_script(_PAUSE)
        self._on_own_share = False  # using the local fallback (said once per outage)
        self._fallback: LocalBudget | None = None
        self._fallback_lock = threading.Lock()

    def acquire(self, claim: Claim) -> None:
        self.fleet.touch()
        if not self.health.usable():
            return self._without_redis(claim)
        try:
            super().acquire(claim)
        except redis.RedisError as error:
            self.health.failed(error)
            return self._without_redis(claim)
        self.health.succeeded()
        self._on_own_share = False

    def _without_redis(self, claim: Claim) -> None:
        """Redis is not asked now. While it is down, this process's share of the rate;
        while it may only be stalled (see RedisHealth), a refusal that says so."""
        if not self.health.down:
            raise UpstreamBusy(REDIS_STALLED, retry_after=math.ceil(self.health.RETRY_INTERVAL))
        if not self._on_own_share:
            self._on_own_share = True
            self._local(fresh=True)  # starts busy: no burst on taking over
            log.info(
                "SessionM budget %s: Redis is down; this process keeps 1/%d of the rate",
                self.name,
                max(1, self.fleet.size),
            )
        self._local().acquire(claim)

    def _decide(self, priority: Priority, patience: float) -> _Decision:
        interval = 1 / paced_rate(self.rate)
        class_interval = interval / self.shares[priority]
        admitted, wait = self._acquire(
            keys=[self._tat_key, f"{self._tat_key}:{priority.value}", self._pause_key],
            args=[
                _micros(interval),
                _micros(tolerance_for(interval)),
                _micros(patience) if patience >= 0 else -1,
                _micros(class_interval),
                _micros(tolerance_for(class_interval)),
            ],
        )
        return _Decision(bool(admitted), int(wait) / 1_000_000)

    def _check_in(self) -> _CheckIn:
        paused, wait = self._check(
            keys=[self._sent_key, self._pause_key, self.peak_key],
            args=[window_limit(self.rate), uuid.uuid4().hex, _micros(CHECK_IN_WINDOW)],
        )
        return _CheckIn(int(paused) / 1_000_000, int(wait) / 1_000_000)

    def pause(self, seconds: float) -> None:
        if self.health.usable():
            try:
                self._pause(keys=[self._pause_key], args=[_micros(seconds)])
            except redis.RedisError as error:
                self.health.failed(error)
        # This process holds back at once, also if Redis is down or comes back.
        self._local().pause(seconds)

    def _local(self, *, fresh: bool = False) -> LocalBudget:
        """The fallback, at rate / the fleet size known now (rebuilt when it changes, and
        `fresh` at each outage); a pause it holds carries over."""
        rate = self.rate / max(1, self.fleet.size)
        with self._fallback_lock:
            if fresh or self._fallback is None or self._fallback.rate != rate:
                previous, self._fallback = (
                    self._fallback,
                    LocalBudget(rate, self.shares, timer=self.timer, sleep=self.sleep, busy=True),
                )
                if previous is not None:
                    self._fallback.pause(previous.paused_for())
            return self._fallback
