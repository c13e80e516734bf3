"""Fresh cache hits of `GET /v1/wallets/<id>`, answered before Flask's dispatch.

In a warmed send every Connected Content call is a fresh hit, at Braze's delivery rate:
what a hit costs decides how many instances a send needs, and Flask's routing, request
context and response object cost more than the service's own work on a hit. This WSGI
layer answers exactly those requests with the very functions the Flask view uses (the
key check, the query rules, the wallet service, the answer memo, the request line), and
hands every other request to Flask unchanged: a miss, a stale copy, any error (which
Flask then answers as usual), any other route. Only dispatch is skipped; the bytes and
headers are the Flask view's (a test holds both paths to the same answers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.datastructures import ImmutableMultiDict

from .auth import key_in_header, key_matches
from .container import Services
from .errors import InvalidRequest
from .request_log import HEADER, Answered, RequestLog, request_id
from .rules import parse_wallet_query

PREFIX = "/v1/wallets/"
ROUTE = "/v1/wallets/<user_id>"  # the Flask rule's pattern, as request lines name it

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict, StartResponse], Iterable[bytes]]


class FastHits:
    """WSGI middleware in front of the Flask app (inside the front-proxy middlewares)."""

    def __init__(self, flask_app: WsgiApp, found: Services, log: RequestLog):
        self.flask_app = flask_app
        self.found = found
        self.log = log

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        answer = self._hit(environ) if environ.get("REQUEST_METHOD") == "GET" else None
        if answer is None:
            return self.flask_app(environ, start_response)
        user_id, cache, age, body = answer
        rid = request_id(environ)
        start_response(
            "200 OK",
            [
                ("X-Cache", cache),
                ("Age", age),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                (HEADER, rid),
            ],
        )
        self.log.add(
            Answered(
                time.time(),
                rid,
                "GET",
                ROUTE,
                200,
                time.perf_counter() - started,
                "hit",
                0,
                len(body),
                user_id,
            )
        )
        return [body]

    def _hit(self, environ: dict) -> tuple[str, str, str, bytes] | None:
        """(user id, X-Cache, Age, body) of a fresh hit; None for anything Flask answers."""
        # PATH_INFO as werkzeug reads it (latin-1 bytes, then UTF-8), the rule's one segment.
        path = environ.get("PATH_INFO", "").encode("latin1").decode(errors="replace")
        if not path.startswith(PREFIX):
            return None
        user_id = path[len(PREFIX) :]
        if not user_id or "/" in user_id:
            return None
        found = self.found
        presented = key_in_header(environ.get("HTTP_AUTHORIZATION", ""))
        if not key_matches(presented, found.settings.api_keys):
            return None
        raw_query = environ.get("QUERY_STRING", "")
        args: ImmutableMultiDict[str, str] = ImmutableMultiDict(
            parse_qsl(
                raw_query.encode("latin1").decode(),
                keep_blank_values=True,
                errors="werkzeug.url_quote",
            )
            if raw_query
            else ()
        )
        try:
            query = parse_wallet_query(user_id, args)
        except InvalidRequest:
            return None
        lookup = found.wallet_service.hit(user_id, query.culture or found.settings.default_culture)
        if lookup is None:
            return None
        now = found.clock()
        body = found.answers.render(lookup, now, query.limit)
        return user_id, lookup.cache, str(lookup.age(now)), body
