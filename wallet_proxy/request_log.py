"""One JSON line per request on standard output, with the request's metrics, for any Flask
app: ours, and the bare baseline of bench/hits.py (so both carry the same cost).

A line: time, level, request_id (the caller's valid `X-Request-ID`, else one made here;
returned in the answer either way), method, route (the URL rule's pattern, never the
path, which holds user ids), status, duration_ms, cache, sessionm_calls, bytes, and
`user` (hashed, see logs.py) on routes that name one.

This sits on the cache-hit path, so it is built to cost little: the line is encoded
in the request's own thread and written with a single `os.write`, with no lock held
at any point (one write of a line this short is atomic on a pipe or an O_APPEND file).
gunicorn's text access log, which this replaces, formatted under one lock shared by
all of a worker's threads.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from typing import cast

from flask import Flask, Request, Response, request
from werkzeug.local import LocalProxy

from . import metrics, tally
from .logs import UserIds, utc_time
from .rules import valid_request_id

HEADER = "X-Request-ID"
UNMATCHED = "unmatched"  # the route of a request no URL rule matched (its path is not logged)

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


class LineWriter:
    """Whole lines to a file descriptor, each in one write; a failed write drops the line
    rather than the request."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, line: bytes) -> None:
        try:
            while line:
                line = line[os.write(self.fd, line) :]
        except OSError:
            pass


def install(app: Flask, user_ids: UserIds, *, out: int = 1) -> None:
    """The request line and request metrics for every request `app` answers, written to `out`.

    Install before anything else that hooks requests, so the duration covers them.
    """
    writer = LineWriter(out)

    @app.before_request
    def _begin() -> None:
        given = request.environ.get("HTTP_X_REQUEST_ID")
        request_id = given if given is not None and valid_request_id(given) else _ids.new()
        tally.begin(request_id, time.perf_counter())

    @app.after_request
    def _end(response: Response) -> Response:
        current = tally.current()
        if current is None:  # _begin never ran for this request
            return response
        tally.end()
        seconds = time.perf_counter() - current.started
        # Once: each attribute read through Flask's proxy costs about a microsecond.
        req = cast("LocalProxy[Request]", request)._get_current_object()
        rule = req.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        status = response.status_code
        metrics.answered(route, status, seconds)
        response.headers[HEADER] = current.request_id
        line = {
            "time": utc_time(time.time()),
            "level": "INFO" if status < 500 else "WARNING",
            "logger": "wallet_proxy.request",
            "request_id": current.request_id,
            "pid": _ids.pid,
            "method": req.method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "cache": current.cache,
            "sessionm_calls": current.sessionm_calls,
            "bytes": response.content_length,
        }
        user_id = (req.view_args or {}).get("user_id")
        if user_id is not None:
            line["user"] = user_ids(user_id)
        writer.write((_encode(line).replace("\x7f", "\\u007f") + "\n").encode())
        return response
