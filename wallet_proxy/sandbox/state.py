"""What the request threads share: the knobs, in-flight counts, and each API's history.

Every Connect or Core call goes through `Sandbox.answer`, which is where the knobs act.
"""

import contextlib
import json
import math
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from flask import Flask, Response, request
from werkzeug.http import HTTP_STATUS_CODES

from .knobs import DEFAULT_KNOBS, check_knobs
from .wire import error

Produce = Callable[[], tuple[int, dict[str, Any]]]

_HUGE_PADDING = 7 * 1024 * 1024
_WINDOW = 1.0  # seconds: the sliding window of `rate_limit` and of `busiest_second`
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"
_DEPTH = 1_000_000  # `deep`: valid JSON nested far past any parser's recursion limit


class Api(Protocol):
    """One API the sandbox speaks: its routes, and the history it keeps for `/_sandbox/stats`.

    `clear` and `stats` run with the sandbox's lock held, as do the hooks given to `answer`.
    """

    def register(self, app: Flask, sandbox: "Sandbox") -> None: ...

    def clear(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


def _status_code_name(status: int) -> str:
    name = HTTP_STATUS_CODES.get(status, "error")
    return re.sub(r"\W+", "_", name).upper()


def _shutdown(sock: socket.socket | None) -> None:
    """Cut the client's connection without an answer, as a server that went away does."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Sandbox:
    """Knobs, in-flight counts and the APIs, behind one lock so stats are one snapshot."""

    def __init__(self, apis: Sequence[Api]) -> None:
        self.apis = tuple(apis)
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._in_flight = 0
        self._clear()

    def _clear(self) -> None:
        """Forget history; `in_flight` is left alone since those calls are still running."""
        self._knobs = dict(DEFAULT_KNOBS)
        self._error_counter = 0
        self._peak = self._in_flight
        self._arrivals: deque[float] = deque()  # every call of the last second
        self._accepted: deque[float] = deque()  # those `rate_limit` let through
        self._busiest_second = 0
        self._rate_limited = 0
        for api in self.apis:
            api.clear()

    def configure(self, knobs: dict[str, Any]) -> dict[str, Any]:
        checked = check_knobs(knobs)
        with self._changed:
            self._knobs.update(checked)
            if "error_rate" in checked:
                self._error_counter = 0
            self._changed.notify_all()
            return dict(self._knobs)

    def reset(self) -> dict[str, Any]:
        with self._changed:
            self._clear()
            self._changed.notify_all()
            return dict(self._knobs)

    def close(self) -> None:
        self.closing.set()
        with self._changed:
            self._changed.notify_all()

    def knobs(self) -> dict[str, Any]:
        """The knobs as set now, for an API whose answers they shape."""
        with self._lock:
            return dict(self._knobs)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = {
                "in_flight": self._in_flight,
                "peak_concurrency": self._peak,
                "busiest_second": self._busiest_second,
                "rate_limited": self._rate_limited,
            }
            for api in self.apis:
                stats.update(api.stats())
            return stats

    def answer(
        self,
        produce: Produce,
        *,
        arrived: Callable[[], None],
        answered: Callable[[int], None] | None = None,
    ) -> Response:
        """Count the call, apply the knobs, and answer with `produce()` unless a knob overrides.

        The API records the call in `arrived` and, once its status is known, in `answered`
        (not called when the call is cut off before an answer).
        """
        with self._lock:
            arrived()
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            latency = self._knobs["latency"] + random.uniform(0, self._knobs["latency_spread"])
            over_limit = self._over_rate_limit(time.monotonic())
            retry_after = self._knobs["retry_after"]
        sock = request.environ.get("werkzeug.socket")
        streamed = False
        try:
            if over_limit:  # a rate limiter answers at once, before any work
                if answered is not None:
                    with self._lock:
                        answered(429)
                return _rate_limited(retry_after)
            if self.closing.wait(latency) or not self._wait_while_hung():
                _shutdown(sock)
                return Response(status=503)
            with self._lock:
                knobs = dict(self._knobs)
                failing = self._next_call_fails(knobs["error_rate"])
            if knobs["trickle_headers"]:
                self._trickle_headers(sock, knobs["trickle_headers"])
                _shutdown(sock)
                return Response(status=503)  # never delivered: the socket is shut
            response = self._respond(knobs, failing, produce)
            if answered is not None:
                with self._lock:
                    answered(response.status_code)
            if knobs["trickle"]:
                response.response = self._trickle(response.get_data(), knobs["trickle"], sock)
                response.call_on_close(self._leave)
                streamed = True
            return response
        finally:
            if not streamed:
                self._leave()

    def _over_rate_limit(self, now: float) -> bool:
        """Count the call in the sliding second; whether `rate_limit` turns it away."""
        for calls in (self._arrivals, self._accepted):
            while calls and calls[0] <= now - _WINDOW:
                calls.popleft()
        self._arrivals.append(now)
        self._busiest_second = max(self._busiest_second, len(self._arrivals))
        limit = self._knobs["rate_limit"]
        if limit is not None and len(self._accepted) >= limit:
            self._rate_limited += 1
            return True
        self._accepted.append(now)
        return False

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _wait_while_hung(self) -> bool:
        """Hold the call while `hang` is on, in short slices; False if the server stopped."""
        with self._changed:
            while self._knobs["hang"] and not self.closing.is_set():
                self._changed.wait(0.05)
        return not self.closing.is_set()

    def _next_call_fails(self, rate: float) -> bool:
        """Fail calls evenly and reproducibly: with rate 0.25, every 4th call since it was set."""
        self._error_counter += 1
        n = self._error_counter
        return math.floor(n * rate) > math.floor((n - 1) * rate)

    def _respond(self, knobs: dict[str, Any], failing: bool, produce: Produce) -> Response:
        headers = {}
        if knobs["status"] is not None:
            status = knobs["status"]
            body = error(_status_code_name(status), "forced by the sandbox's status knob")
            if status == 429 and knobs["retry_after"] is not None:
                headers["Retry-After"] = str(knobs["retry_after"])
        elif failing:
            status, body = 500, error("INTERNAL", "injected by the sandbox's error_rate knob")
        elif knobs["garbage"]:
            return Response(_GARBAGE, 200, mimetype="text/html")
        elif knobs["deep"]:
            return Response(b"[" * _DEPTH + b"]" * _DEPTH, 200, mimetype="application/json")
        else:
            status, body = produce()
        if knobs["huge"]:
            body = {**body, "padding": "x" * _HUGE_PADDING}
        data = json.dumps(body, ensure_ascii=False)
        return Response(data, status, headers, mimetype="application/json")

    def _trickle_headers(self, sock: socket.socket | None, delay: float) -> None:
        """A status line, then one byte of an endless header per `delay` seconds, until the
        client hangs up or the server stops: read timeouts per socket read never trip."""
        if sock is None:
            return
        try:
            sock.sendall(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
            while not self.closing.wait(delay):
                sock.sendall(b"x")
        except OSError:
            return  # the client hung up

    def _trickle(self, data: bytes, delay: float, sock: socket.socket | None) -> Iterator[bytes]:
        """Send one byte per `delay` seconds; cut the connection if the server stops meanwhile."""
        for i in range(len(data)):
            if self.closing.wait(delay):
                _shutdown(sock)
                return
            yield data[i : i + 1]


def _rate_limited(retry_after: int | None) -> Response:
    body = error("TOO_MANY_REQUESTS", "over the sandbox's rate_limit knob")
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Response(json.dumps(body), 429, headers, mimetype="application/json")
