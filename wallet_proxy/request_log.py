"""One JSON line per request on standard output, with the request's metrics, for any Flask
app: ours, and the bare baseline of bench/hits.py (so both carry the same cost).

A line: time, level, request_id (the caller's valid `X-Request-ID`, else one made here;
returned in the answer either way), pid, method, route (the URL rule's pattern, never
the path, which holds user ids), status, duration_ms, cache, sessionm_calls, bytes, and
`user` (hashed, see logs.py) on routes that name one.

This sits on the cache-hit path, so the request's own thread only notes the facts and
appends them to a queue: no lock, no formatting, no system call. One thread per
process turns what is queued into lines and metrics every FLUSH_INTERVAL and writes
the lines in as few writes as it can, each whole lines of at most PIPE_BUF bytes (so
no other worker's write can land inside a line on a shared pipe). Measured under
gunicorn, that costs a cache hit about half what formatting and writing each line at
once did, and less than gunicorn's own text access log (docs/benchmarks.md). Lines
still queued when the process exits are written by an atexit hook; if the output
blocks for long, the queue stops at QUEUE_LIMIT and further lines are counted as
dropped (wallet_proxy_log_lines_dropped_total) rather than holding requests up.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple, cast

from flask import Flask, Request, Response, request
from werkzeug.local import LocalProxy

from . import metrics, tally
from .background import Loop
from .logs import UserIds, utc_time
from .rules import valid_request_id
from .tally import CacheResult

HEADER = "X-Request-ID"
UNMATCHED = "unmatched"  # the route of a request no URL rule matched (its path is not logged)
FLUSH_INTERVAL = 0.1  # seconds a line may wait for its write
QUEUE_LIMIT = 50_000  # lines waiting at most (a few MB)
PIPE_BUF = 4096  # a write this size or smaller is atomic on a pipe (POSIX)

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class _Ids:
    """Request ids unique across processes and restarts at the cost of a counter: a random
    prefix per process (drawn again after a fork) and a sequence number."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self.prefix = secrets.token_hex(6)
        self.pid = os.getpid()
        self._numbers = itertools.count(1)

    def new(self) -> str:
        return f"{self.prefix}-{next(self._numbers):x}"


_ids = _Ids()


class Answered(NamedTuple):
    """What one request left for its line and metrics."""

    time: float
    request_id: str
    method: str
    route: str
    status: int
    seconds: float
    cache: CacheResult | None
    sessionm_calls: int
    bytes: int | None
    user_id: str | None


class RequestLog:
    """Queued answers, written as lines to `fd` and counted in metrics by the writer thread."""

    def __init__(self, fd: int, user_ids: UserIds):
        self.fd = fd
        self.user_ids = user_ids
        self._queue: deque[Answered] = deque()
        self._flushing = threading.Lock()  # the writer thread, and a flush at exit or scrape
        _logs.add(self)

    def add(self, answered: Answered) -> None:
        if len(self._queue) >= QUEUE_LIMIT:
            metrics.log_line_dropped()
            return
        self._queue.append(answered)  # atomic, no lock
        _writer.start()

    def flush(self) -> None:
        """Write and count every queued answer now."""
        with self._flushing:
            lines = []
            while self._queue:
                lines.append(self._line(self._queue.popleft()))
            if lines:
                self._write("".join(lines).encode())

    def _line(self, answered: Answered) -> str:
        metrics.answered(answered.route, answered.status, answered.seconds, answered.cache)
        line = {
            "time": utc_time(answered.time),
            "level": "INFO" if answered.status < 500 else "WARNING",
            "logger": "wallet_proxy.request",
            "request_id": answered.request_id,
            "pid": _ids.pid,
            "method": answered.method,
            "route": answered.route,
            "status": answered.status,
            "duration_ms": round(answered.seconds * 1000, 2),
            "cache": answered.cache,
            "sessionm_calls": answered.sessionm_calls,
            "bytes": answered.bytes,
        }
        if answered.user_id is not None:
            line["user"] = self.user_ids(answered.user_id)
        # JSON leaves DEL as it is; it is a control character all the same.
        return _encode(line).replace("\x7f", "\\u007f") + "\n"

    def _write(self, data: bytes) -> None:
        """A failed write drops the lines rather than the service."""
        try:
            for chunk in line_chunks(data):
                while chunk:
                    chunk = chunk[os.write(self.fd, chunk) :]
        except OSError:
            pass


def line_chunks(data: bytes) -> Iterator[bytes]:
    """Whole lines, at most PIPE_BUF bytes at a time where the lines allow (a longer line
    goes alone)."""
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + PIPE_BUF) + 1
        if end <= start:
            end = data.index(b"\n", start) + 1
        yield data[start:end]
        start = end


def _write_queued_lines(stop: threading.Event) -> None:
    """The writer's loop: every FLUSH_INTERVAL, and once more when stopped."""
    while not stop.wait(FLUSH_INTERVAL):
        flush_all()
    flush_all()


_logs: weakref.WeakSet[RequestLog] = weakref.WeakSet()
# The one thread per process that writes every RequestLog's lines; started on first use.
_writer = Loop("wallet-proxy-request-log", _write_queued_lines)


@atexit.register
def flush_all() -> None:
    """Every queued line of this process, now: by the writer thread, at exit, and before a
    metrics scrape (so the scrape counts this worker's latest answers)."""
    for log in list(_logs):
        log.flush()


def request_id(environ: dict) -> str:
    """The caller's valid X-Request-ID, else a new one."""
    given = environ.get("HTTP_X_REQUEST_ID")
    return given if given is not None and valid_request_id(given) else _ids.new()


def route_of(req: Request) -> str:
    """What logs and metrics name a request by: its URL rule's pattern, never the path,
    which holds user ids."""
    rule = req.url_rule
    return rule.rule if rule is not None else UNMATCHED


def install(app: Flask, user_ids: UserIds, *, out: int = 1) -> RequestLog:
    """The request line and request metrics for every request `app` answers, written to `out`.

    Install before anything else that hooks requests, so the duration covers them.
    """
    log = RequestLog(out, user_ids)

    @app.before_request
    def _begin() -> None:
        tally.begin(request_id(request.environ), time.perf_counter())

    @app.after_request
    def _end(response: Response) -> Response:
        current = tally.current()
        if current is None:  # _begin never ran for this request
            return response
        tally.end()
        seconds = time.perf_counter() - current.started
        response.headers[HEADER] = current.request_id
        # Once: each attribute read through Flask's proxy costs about a microsecond.
        req = cast("LocalProxy[Request]", request)._get_current_object()
        log.add(
            Answered(
                time.time(),
                current.request_id,
                req.method,
                route_of(req),
                response.status_code,
                seconds,
                current.cache,
                current.sessionm_calls,
                response.content_length,
                (req.view_args or {}).get("user_id"),
            )
        )
        return response

    return log
