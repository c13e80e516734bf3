"""Outbound HTTP, one way for every client: SessionM Connect, SessionM Core and Braze.

Every call here has a wall-clock deadline on the whole call, headers included: the
watchdog (watchdog.py) shuts the connection when it passes, however slowly the peer
trickles bytes, because requests' and urllib3's timeouts only bound each socket
read. Bodies are read in what each socket read brings, refused past a cap, and
abandoned at the deadline. Redirects are never followed and urllib3 never retries:
whether a call may be sent again is the caller's decision, made from how far the
failed call got, which the class of `HttpFailure` raised says.

The watchdog reaches into urllib3's connection and pool classes, so setup.cfg pins
urllib3 to the major version it is tested with (>=2.6,<3).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import requests
import urllib3

from .version import __version__
from .watchdog import Watchdog, WatchedAdapter, process_watchdog

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
USER_AGENT = f"wallet-proxy/{__version__}"


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpFailure(Exception):
    """A call that brought no whole answer. `reached` says whether the request may have
    reached the server, which decides whether sending it again could act twice."""

    reached = True


class NotConnected(HttpFailure):
    """No connection was made, so nothing was sent."""

    reached = False


class ConnectionRefused(NotConnected):
    """The server (or the way to it) refused the connection, or its name is unknown."""


class ConnectTimeout(NotConnected):
    """No connection within the connect timeout."""


class AnswerTimeout(HttpFailure):
    """The request went out, but no whole answer came in time (a read timeout, or the
    call's deadline passed)."""


class ConnectionLost(HttpFailure):
    """The connection broke after it was made (dropped, reset, or a protocol error)."""


class AnswerTooLarge(HttpFailure):
    """The answer's body is over the cap; its status and headers are known."""

    def __init__(self, status: int, headers: Mapping[str, str]):
        super().__init__(f"an answer over the size cap (HTTP {status})")
        self.status = status
        self.headers = headers


class HttpClient:
    """A keep-alive pool to any host, with a connect timeout, a timeout per socket read,
    a body cap and a deadline on every call."""

    def __init__(
        self,
        *,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        max_body_bytes: int,
        watchdog: Watchdog | None = None,
    ):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_body_bytes = max_body_bytes
        self.watchdog = watchdog or process_watchdog()
        self.session = requests.Session()
        adapter = WatchedAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        # The environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) is read here and per
        # host, once: trusting it, requests reads it again, and .netrc, on every call.
        self.session.trust_env = False
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or (
            os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._proxies: dict[str, dict[str, str]] = {}

    def close(self) -> None:
        self.session.close()

    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        deadline: float,
        *,
        auth: tuple[str, str] | None = None,
    ) -> HttpAnswer:
        """One POST, answered whole by `deadline` (a `time.monotonic()` instant), else an
        `HttpFailure` saying how far it got."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AnswerTimeout("the deadline had passed before the call")
        timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
        with self.watchdog.watch(deadline) as watch:
            try:
                # A body read to its end gives the connection back to the pool (urllib3),
                # kept alive for the next call; one cut short is closed with the response.
                with self.session.post(
                    url,
                    data=body,
                    headers=headers,
                    auth=auth,
                    timeout=timeout,
                    stream=True,
                    allow_redirects=False,
                    proxies=self._proxies_for(url),
                ) as response:
                    answer = HttpAnswer(
                        response.status_code,
                        response.headers,
                        self._read_capped(response, deadline),
                    )
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                if watch.expired:
                    raise AnswerTimeout("cut at the call's deadline") from None
                raise _failure(exc) from None
            if watch.expired:  # cut at the deadline: the body may look complete
                raise AnswerTimeout("cut at the call's deadline")
            return answer

    def _proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for `url`'s origin (NO_PROXY applied), read once."""
        origin = "/".join(url.split("/", 3)[:3])
        found = self._proxies.get(origin)
        if found is None:
            found = self._proxies[origin] = requests.utils.get_environ_proxies(origin)
        return found

    def _read_capped(self, response: requests.Response, deadline: float) -> bytes:
        """The body, refused past the cap and abandoned at the deadline.

        `read1` returns whatever one socket read brings, so a peer trickling bytes can't
        hold the call past its deadline the way a fill-the-buffer read would.
        """
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise AnswerTooLarge(response.status_code, response.headers)
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise AnswerTimeout("the answer was still arriving at the call's deadline")
            chunk = response.raw.read1(CHUNK, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body_bytes:
                raise AnswerTooLarge(response.status_code, response.headers)
            chunks.append(chunk)


def _failure(exc: requests.RequestException | urllib3.exceptions.HTTPError) -> HttpFailure:
    """How far a failed call got, from what requests or urllib3 raised."""
    if isinstance(exc, requests.ConnectTimeout):
        return ConnectTimeout(str(exc))
    if isinstance(exc, requests.Timeout | urllib3.exceptions.ReadTimeoutError):
        return AnswerTimeout("no answer within the read timeout")
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return ConnectionRefused("the connection was refused")
        return ConnectionLost("the connection dropped")
    # urllib3's own errors come from reading the body (read1), which requests doesn't
    # wrap: a connection cut or a protocol error half-way through.
    log.warning("an outbound call failed: %s", type(exc).__name__)
    return ConnectionLost(type(exc).__name__)
