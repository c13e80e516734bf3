"""Every Prometheus metric the service exports, and the one call each place makes to feed it.

The objects live here and nowhere else, so names, labels and buckets have one home
(docs/operations.md and deploy/grafana-dashboard.json read from the same list). Code
elsewhere calls a function below where the thing happens (a lookup decided, a
SessionM call ended, the breaker moved) and never prometheus_client itself; the
functions also note the fact on the request's tally (tally.py) for its log line.

Under gunicorn each worker counts in its own files and a scrape sums them
(prometheus_client's multiprocess mode). The library chooses that mode when it is
first imported, from PROMETHEUS_MULTIPROC_DIR, which gunicorn_config.py sets before
any worker starts; the gunicorn master never imports this module.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, ParamSpec, TypeVar, get_args

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.context_managers import InprogressTracker
from prometheus_client.multiprocess import MultiProcessCollector

from . import tally
from .budget import Priority
from .errors import UpstreamBusy, WalletProxyError
from .tally import CacheResult

if TYPE_CHECKING:
    from .budget import Budget, Claim

P = ParamSpec("P")
R = TypeVar("R")

CACHE_RESULTS: tuple[CacheResult, ...] = ("hit", "stale", "negative", "miss")
TriggerOutcome = Literal["accepted", "repeat", "sent", "retry", "unknown", "dead"]
TagsOutcome = Literal["accepted", "repeat", "applied", "retry", "unknown", "dead"]
BREAKER_LEVELS = {"closed": 0, "half-open": 1, "open": 2}

# Braze gives up at 2 s and the service answers by WALLET_PROXY_DEADLINE (1.5 s): the
# buckets are dense there, so the dashboard's p99 can be read against both.
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
SESSIONM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "wallet_proxy_http_requests",
    "Answers sent, by route pattern and HTTP status.",
    ["route", "status"],
)
HTTP_DURATION = Histogram(
    "wallet_proxy_http_request_duration_seconds",
    "Time from reading a request to its answer, by route pattern.",
    ["route"],
    buckets=ANSWER_BUCKETS,
)
CACHE = Counter(
    "wallet_proxy_cache_results",
    "Wallet lookups by what the cache held: hit, stale, negative (a remembered "
    "not-found) or miss.",
    ["result"],
)
SESSIONM_CALLS = Counter(
    "wallet_proxy_sessionm_calls",
    "HTTP calls to SessionM, by API and outcome (ok, or the error).",
    ["api", "outcome"],
)
SESSIONM_DURATION = Histogram(
    "wallet_proxy_sessionm_call_duration_seconds",
    "Time of one HTTP call to SessionM, by API.",
    ["api"],
    buckets=SESSIONM_BUCKETS,
)
# `livemax`: the worst state among the running workers (plain `max` would keep a dead
# worker's last state, an "open" forever).
BREAKER_STATE = Gauge(
    "wallet_proxy_breaker_state",
    "The SessionM circuit breaker: 0 closed, 1 half-open, 2 open (the worst worker's).",
    multiprocess_mode="livemax",
)
FLIGHT_WAITERS = Gauge(
    "wallet_proxy_singleflight_waiters",
    "Requests waiting now for a wallet fetch (all waiters of one user share one call).",
    multiprocess_mode="livesum",
)
REDIS_ERRORS = Counter(
    "wallet_proxy_redis_errors",
    "Failed calls to the shared Redis cache (answers then come from the worker's own cache).",
)

# Budget waits run from nothing (room now) to a bulk job's patience.
BUDGET_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BUDGET_WAIT = Histogram(
    "wallet_proxy_sessionm_budget_wait_seconds",
    "Time a request to SessionM waited for the fleet's request budget before it went, by API.",
    ["api"],
    buckets=BUDGET_BUCKETS,
)
BUDGET_DENIED = Counter(
    "wallet_proxy_sessionm_budget_denied",
    "Requests to SessionM the budget refused (a render answered 503 or stale, a refresh "
    "skipped, bulk work out of patience), by API and priority.",
    ["api", "priority"],
)
BUDGET_RATE = Gauge(
    "wallet_proxy_sessionm_budget_rate",
    "The configured request budget per second for the whole fleet, by API (absent: no budget).",
    ["api"],
    multiprocess_mode="livemax",
)
BUDGET_PAUSES = Counter(
    "wallet_proxy_sessionm_budget_pauses",
    "SessionM 429s that paused the whole fleet's calls to that API.",
    ["api"],
)
OFFERS_WITHOUT_EXPIRY_FIELD = Counter(
    "wallet_proxy_offers_without_expiry_field",
    "Offers read from SessionM (at each wallet fetch) with none of the expiry fields the "
    "service knows (expires_at, expiration_date, redemption_end_date): served as never expiring.",
)
TRIGGERS = Counter(
    "wallet_proxy_triggers",
    "Triggers by what happened to them: accepted, repeat (an earlier trigger answered), "
    "sent, retry, unknown (Braze may have it), dead.",
    ["outcome"],
)
# Set by the one deliverer of an instance (the other workers hold 0), so `livesum` is the
# instance's outbox; with a Redis outbox shared by instances, take the max across them.
TRIGGER_QUEUE = Gauge(
    "wallet_proxy_trigger_queue_depth",
    "Triggers waiting for Braze (queued or being sent) in this instance's outbox.",
    multiprocess_mode="livesum",
)
QUEUED_TAGS = Counter(
    "wallet_proxy_queued_tags",
    "Webhooks' tags (WALLET_PROXY_TAGS_MODE=queued) by what happened to them: accepted, "
    "repeat (an earlier webhook answered), applied, retry, unknown (SessionM may have "
    "them), dead.",
    ["outcome"],
)
# Set by the one tags worker of an instance, as the trigger queue's depth is.
TAGS_QUEUE = Gauge(
    "wallet_proxy_tags_queue_depth",
    "Webhooks' tags waiting for SessionM (queued or being applied) in this instance's outbox.",
    multiprocess_mode="livesum",
)
# The whole outbox's, every queue's: any worker reading it reads the same (`livemax`).
OUTBOX_BYTES = Gauge(
    "wallet_proxy_outbox_bytes",
    "Bytes the instance's outbox (triggers and queued tags) holds against "
    "WALLET_PROXY_TRIGGER_MAX_BYTES.",
    multiprocess_mode="livemax",
)
OUTBOX_PRUNED = Counter(
    "wallet_proxy_outbox_pruned",
    "Kept items (sent, then dead letters; of any queue) removed to make room within "
    "WALLET_PROXY_TRIGGER_MAX_BYTES.",
)
# Labelled by the data folder so that they are absent with the outbox in Redis.
OUTBOX_DISK_FREE = Gauge(
    "wallet_proxy_outbox_disk_free_bytes",
    "Free bytes on the disk of the SQLite outbox (its reserve not counted).",
    ["folder"],
    multiprocess_mode="livemostrecent",
)
OUTBOX_DISK_FULL = Gauge(
    "wallet_proxy_outbox_disk_full",
    "1 while new items are refused for want of room on the SQLite outbox's disk "
    "(delivery goes on from its reserve), else 0.",
    ["folder"],
    multiprocess_mode="livemostrecent",
)

LOG_LINES_DROPPED = Counter(
    "wallet_proxy_log_lines_dropped",
    "Request lines dropped because standard output did not take them fast enough.",
)

_cache_children = {result: CACHE.labels(result) for result in CACHE_RESULTS}
_trigger_children = {outcome: TRIGGERS.labels(outcome) for outcome in get_args(TriggerOutcome)}
_tags_children = {outcome: QUEUED_TAGS.labels(outcome) for outcome in get_args(TagsOutcome)}
# Resolved once per (route, status): `labels()` costs more than the increment itself.
_answer_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}


def answered(route: str, status: int, seconds: float, cache: CacheResult | None) -> None:
    """One answer sent (request_log.py calls this off the request's thread); `route` is the
    URL rule's pattern (a bounded set), never the path; `cache` what its lookup found."""
    children = _answer_children.get((route, status))
    if children is None:
        children = _answer_children.setdefault(
            (route, status),
            (HTTP_REQUESTS.labels(route, str(status)), HTTP_DURATION.labels(route)),
        )
    children[0].inc()
    children[1].observe(seconds)
    if cache is not None:
        _cache_children[cache].inc()


def cache_result(result: CacheResult) -> None:
    """What one wallet lookup found in the cache. During a request, it is counted with the
    request's answer (`answered`), off the request's thread: this is on every cache hit."""
    current = tally.current()
    if current is None:
        _cache_children[result].inc()
    else:
        current.cache = result


def sessionm_call(api: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorates a function that makes one HTTP call to SessionM's `api`: counts its outcome,
    times it, and counts it for the request it was made for."""
    duration = SESSIONM_DURATION.labels(api)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def measured(*args: P.args, **kwargs: P.kwargs) -> R:
            started, outcome = time.perf_counter(), "ok"
            try:
                return fn(*args, **kwargs)
            except WalletProxyError as error:
                outcome = outcome_of(error)
                raise
            except Exception:
                outcome = "unexpected"
                raise
            finally:
                duration.observe(time.perf_counter() - started)
                SESSIONM_CALLS.labels(api, outcome).inc()
                current = tally.current()
                if current is not None:
                    current.sessionm_calls += 1

        return measured

    return decorate


def outcome_of(error: WalletProxyError) -> str:
    """A label from the error's class (bounded by the error tree): UpstreamTimeout is
    `timeout`, UserNotFound `user_not_found`, a plain UpstreamError `error`."""
    name = type(error).__name__.removeprefix("Upstream") or "Error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def breaker_state(state: str) -> None:
    """The breaker moved to `state` (closed, half-open or open)."""
    BREAKER_STATE.set(BREAKER_LEVELS[state])


def waiting_for_flight() -> InprogressTracker:
    """A context manager counting the requests waiting on a wallet fetch."""
    return FLIGHT_WAITERS.track_inprogress()


def redis_error() -> None:
    REDIS_ERRORS.inc()


class MeteredBudget:
    """A SessionM budget (budget.Budget) whose waits, refusals and pauses are counted."""

    def __init__(self, api: str, budget: Budget):
        self.api = api
        self.budget = budget
        self.rate = budget.rate
        self._wait = BUDGET_WAIT.labels(api)
        self._pauses = BUDGET_PAUSES.labels(api)
        self._denied = {p: BUDGET_DENIED.labels(api, p.value) for p in Priority}
        BUDGET_RATE.labels(api).set(budget.rate)

    def acquire(self, claim: Claim) -> None:
        started = time.perf_counter()
        try:
            self.budget.acquire(claim)
        except UpstreamBusy:
            self._denied[claim.priority].inc()
            raise
        self._wait.observe(time.perf_counter() - started)

    def pause(self, seconds: float) -> None:
        self._pauses.inc()
        self.budget.pause(seconds)


def offers_without_expiry_field(count: int) -> None:
    """`count` offers of one fetched wallet had no expiry field the service knows."""
    if count:
        OFFERS_WITHOUT_EXPIRY_FIELD.inc(count)


def trigger_outcome(outcome: TriggerOutcome, count: int = 1) -> None:
    _trigger_children[outcome].inc(count)


def trigger_queue_depth(depth: int) -> None:
    TRIGGER_QUEUE.set(depth)


def tags_outcome(outcome: TagsOutcome, count: int = 1) -> None:
    _tags_children[outcome].inc(count)


def tags_queue_depth(depth: int) -> None:
    TAGS_QUEUE.set(depth)


def outbox_bytes(total: int) -> None:
    OUTBOX_BYTES.set(total)


def outbox_pruned(count: int) -> None:
    OUTBOX_PRUNED.inc(count)


def outbox_disk(folder: str, *, free_bytes: int, full: bool) -> None:
    """What the SQLite outbox's disk has free, and whether intake refuses for want of it."""
    OUTBOX_DISK_FREE.labels(folder).set(free_bytes)
    OUTBOX_DISK_FULL.labels(folder).set(1 if full else 0)


def log_line_dropped() -> None:
    LOG_LINES_DROPPED.inc()


def exposition() -> bytes:
    """What a scrape gets: under gunicorn every worker's metrics summed, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
