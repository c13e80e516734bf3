"""SessionM stand-in: a real HTTP server speaking Connect offers and Core customer tags.

Tests run it in a thread (`SandboxServer`), people run it with `wallet-proxy sandbox`
(`serve`). Answers depend only on the clock and the seeded users; knobs are the one way to
make it misbehave (latency, injected errors, forced statuses, hangs, trickled, garbage or
huge bodies). Knobs are set in Python or over HTTP, so a benchmark can drive a sandbox
running in another process.

Knob precedence for each Connect/Core call: `latency`, then `hang`, then the answer is the
first of `status`, `error_rate`, `garbage` and the real one; `huge` pads any JSON answer and
`trickle` slows whatever is sent.

The `/_sandbox/*` admin endpoints (config, stats, reset) need no auth on purpose: this is a
local test double with demo credentials and must never face a real network.
"""

import base64
import contextlib
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from flask import Flask, Response, jsonify, request
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import WSGIRequestHandler, make_server

DEMO_CONNECT_AUTH = base64.b64encode(b"demo-connect-key:demo-connect-secret").decode("ascii")
DEMO_RETAILER_ID = "5f0c6b0e-5a11-4b0b-9d1e-000000000001"
DEMO_CORE_API_KEY = "demo-core-key"
DEMO_CORE_API_SECRET = "demo-core-secret"  # noqa: S105 - public demo credential

_MAX_TAKE = 1000

_Offer = dict[str, Any]
_Clock = Callable[[], datetime]

_EXTENSION = "sessionm_sandbox"
_GROUP_ID = "6a0f0c1e-0000-4000-8000-000000000001"
_CATEGORY_ID = "6a0f0c1e-0000-4000-8000-000000000002"
_CAROL_OFFERS = 2500
_HUGE_PADDING = 7 * 1024 * 1024
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"
_KNOB_LIMIT_SECONDS = 3600.0
_DEFAULT_KNOBS: dict[str, Any] = {
    "latency": 0.0,
    "error_rate": 0.0,
    "status": None,
    "hang": False,
    "trickle": 0.0,
    "garbage": False,
    "huge": False,
}


def _dotnet(moment: datetime, digits: int) -> str:
    """Format a UTC time the way SessionM's .NET serializer does, with 0 to 7 fraction digits."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}0"[:digits]
    return text + "Z"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"status": "error", "errors": {"code": code, "message": message}}


def _is_int(value: Any) -> bool:
    """JSON booleans are Python ints; a count must not accept `true`."""
    return isinstance(value, int) and not isinstance(value, bool)


def _status_code_name(status: int) -> str:
    name = HTTP_STATUS_CODES.get(status, "error")
    return re.sub(r"\W+", "_", name).upper()


def _alice_offers(now: datetime, es: bool) -> list[_Offer]:
    """One offer per case a wallet view must get right, deliberately not in expiry order."""

    def t(english: str, spanish: str) -> str:
        return spanish if es else english

    logo = {"uri": "https://example.com/coffee-logo.png", "category_name": "Logo"}
    hero = {"uri": "https://example.com/coffee-hero.jpg", "category_name": "Hero"}
    return [
        {
            "id": "a11ce000-0000-4000-8000-000000000003",
            "offer_id": "a11ce000-0000-4000-9000-000000000003",
            "offer_group_id": _GROUP_ID,
            "offer_type": "points_multiplier",
            "title": t("Double points on Saturdays", "Puntos dobles los sábados"),
            "description": t(
                "Earn twice the points on every Saturday purchase.",
                "Gana el doble de puntos en cada compra del sábado.",
            ),
            "terms": t(
                "Saturdays only. Points post within 48 hours.",
                "Solo sábados. Los puntos se abonan en 48 horas.",
            ),
            "pos_discount_id": "SAT-2X",
            "points": 0,
            "is_redeemable": True,
            "start_date": _dotnet(now - timedelta(days=5), 0),
            "redemption_end_date": _dotnet(now + timedelta(days=30), 0),
            "custom_data": {"tier": "gold"},
        },
        {
            "user_offer_id": "a11ce000-0000-4000-8000-000000000001",
            "offer_id": "a11ce000-0000-4000-9000-000000000001",
            "offer_group_id": _GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": t("Free pastry with any drink", "Bollería gratis con cualquier bebida"),
            "description": t(
                "Pick any pastry from the counter when you buy a drink.",
                "Elige cualquier bollo del mostrador al comprar una bebida.",
            ),
            "terms": t(
                "One per visit. Not valid with other offers.",
                "Uno por visita. No acumulable con otras ofertas.",
            ),
            "pos_discount_id": "PASTRY-FREE",
            "points": 0,
            "is_redeemable": True,
            "start_date": _dotnet(now - timedelta(days=32), 3),
            "expiration_date": _dotnet(now - timedelta(days=2), 3),
            "media": [logo, hero],
        },
        {
            "user_offer_id": "a11ce000-0000-4000-8000-000000000004",
            "offer_id": "a11ce000-0000-4000-9000-000000000004",
            "root_offer_id": "a11ce000-0000-4000-9000-000000000004",
            "offer_group_id": _GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": t("Free refill, always", "Recarga gratis, siempre"),
            "description": t(
                "Bring your cup back for a free refill of filter coffee.",
                "Vuelve con tu taza y te la rellenamos gratis con café de filtro.",
            ),
            "terms": t("Same day, same store.", "Mismo día, misma tienda."),
            "pos_discount_id": "REFILL",
            "points": 0,
            "is_redeemable": True,
            "start_date": _dotnet(now - timedelta(days=400), 7),
            "expiration_date": None,
            "media": [hero],
            "is_featured": True,
        },
        {
            "user_offer_id": "a11ce000-0000-4000-8000-000000000002",
            "offer_id": "a11ce000-0000-4000-9000-000000000002",
            "offer_group_id": _GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": t("10% off your next coffee", "10 % de descuento en tu próximo café"),
            "description": t(
                "Show this offer at the till to save on any coffee.",
                "Muestra esta oferta en caja para ahorrar en cualquier café.",
            ),
            "terms": t(
                "Valid in participating stores. One use.",
                "Válido en tiendas participantes. Un solo uso.",
            ),
            "pos_discount_id": "COFFEE-10",
            "points": 100,
            "is_redeemable": True,
            "start_date": _dotnet(now - timedelta(days=1), 3),
            "expiration_date": _dotnet(now + timedelta(days=3), 7),
            "media": [logo],
            "reward_type": "percent_off",
        },
        {
            "id": "a11ce000-0000-4000-8000-000000000005",
            "offer_id": "a11ce000-0000-4000-9000-000000000005",
            "offer_group_id": _GROUP_ID,
            "offer_type": "points_redemption",
            "title": t("$5 off a bag of beans", "5 € de descuento en una bolsa de café"),
            "description": t(
                "Trade 500 points for $5 off any bag of whole beans.",
                "Cambia 500 puntos por 5 € de descuento en cualquier bolsa de café en grano.",
            ),
            "terms": t("Needs 500 available points.", "Necesitas 500 puntos disponibles."),
            "pos_discount_id": "BEANS-5",
            "points": 500,
            "is_redeemable": False,
            "start_date": _dotnet(now - timedelta(days=3), 0),
            "expiration_date": _dotnet(now + timedelta(days=10), 7),
        },
    ]


def _mallory_offers(now: datetime, _es: bool) -> list[_Offer]:
    """Hostile texts (the same in every culture) to prove the proxy escapes what it renders."""
    return [
        {
            "user_offer_id": "0bad0000-0000-4000-8000-000000000001",
            "offer_id": "0bad0000-0000-4000-9000-000000000001",
            "offer_group_id": _GROUP_ID,
            "offer_type": "manual_fulfillment",
            "name": "<script>alert(1)</script>",
            "description": "<b>html</b> & \"quotes\" & 'apostrophes'",
            "terms": "Void where <em>prohibited</em>.",
            "pos_discount_id": "<img src=x onerror=alert(2)>",
            "points": 0,
            "is_redeemable": True,
            "start_date": _dotnet(now - timedelta(days=1), 3),
            "expiration_date": _dotnet(now + timedelta(days=7), 3),
            "media": [
                {"uri": "https://example.com/mallory-logo.png?a=1&b=2", "category_name": "Logo"}
            ],
        }
    ]


def _carol_offer(n: int, now: datetime, es: bool) -> _Offer:
    """Offer number `n` (from 1) of a large wallet; distinct future expiries in no order."""
    return {
        "user_offer_id": f"c0000000-0000-4000-8000-{n:012d}",
        "offer_id": f"c0000000-0000-4000-9000-{n:012d}",
        "offer_group_id": _GROUP_ID,
        "offer_type": "manual_fulfillment",
        "name": f"Oferta {n}" if es else f"Offer {n}",
        "description": f"Oferta generada número {n}." if es else f"Generated offer number {n}.",
        "terms": "Una por cliente." if es else "One per customer.",
        "pos_discount_id": f"GEN-{n:04d}",
        "points": n % 50 * 10,
        "is_redeemable": True,
        "start_date": _dotnet(now - timedelta(days=1), (0, 3, 7)[n % 3]),
        "expiration_date": _dotnet(
            now + timedelta(days=1 + n * 37 % 365, minutes=n), (7, 0, 3)[n % 3]
        ),
    }


_OfferPage = Callable[[datetime, bool, int, int], tuple[list[_Offer], int]]


def _listed(build: Callable[[datetime, bool], list[_Offer]]) -> _OfferPage:
    """Page a short wallet that is cheap to build whole."""

    def page(now: datetime, es: bool, skip: int, take: int) -> tuple[list[_Offer], int]:
        offers = build(now, es)
        return offers[skip : skip + take], len(offers)

    return page


def _carol_page(now: datetime, es: bool, skip: int, take: int) -> tuple[list[_Offer], int]:
    """Build only the asked page: building all 2,500 offers per call would skew benchmarks."""
    stop = min(skip + take, _CAROL_OFFERS)
    return [_carol_offer(n, now, es) for n in range(skip + 1, stop + 1)], _CAROL_OFFERS


@dataclass(frozen=True)
class _Wallet:
    description: str
    opted_in: bool
    activated: bool
    total_points: int
    available_points: int
    offers: _OfferPage


_WALLETS = {
    "demo-alice": _Wallet(
        "1,250 points; 5 offers: expired, 3 days left, 30 days left, never expires, "
        "not redeemable",
        True,
        True,
        4000,
        1250,
        _listed(_alice_offers),
    ),
    "demo-bob": _Wallet(
        "40 points; no offers", True, False, 40, 40, _listed(lambda _now, _es: [])
    ),
    "demo-carol": _Wallet(
        "99,999 points; 2,500 live offers (needs 3 pages of 1,000)",
        True,
        True,
        120000,
        99999,
        _carol_page,
    ),
    "demo-mallory": _Wallet(
        "0 points; 1 offer with <script> and <b> in its texts (escaping)",
        False,
        False,
        0,
        0,
        _listed(_mallory_offers),
    ),
}
# Any `user-*` id has this small wallet, so load tests and benchmarks can use as many
# distinct customers as they like (each still a separate SessionM call and cache key).
_GENERATED = _Wallet(
    "any user-* id: 120 points, 3 live offers (for load tests)",
    True,
    True,
    500,
    120,
    _listed(lambda now, es: [_carol_offer(n, now, es) for n in (1, 2, 3)]),
)
SEEDED_USERS = {user_id: wallet.description for user_id, wallet in _WALLETS.items()}
SEEDED_USERS["user-*"] = _GENERATED.description


def _customer_exists(user_id: str) -> bool:
    """Seeded users plus open-ended prefixes, so bulk tagging tests can invent customers."""
    return user_id in _WALLETS or user_id.startswith(("user-", "ext-"))


def _connect_body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object (Content-Type: application/json)"
    if not isinstance(body.get("user_id"), str) or not body["user_id"]:
        return "user_id is required"
    for name in ("skip", "take"):
        value = body.get(name)
        if value is not None and not (_is_int(value) and value >= 0):
            return f"{name} must be a non-negative integer"
    if not isinstance(body.get("culture"), str | None):
        return "culture must be a string"
    return None


def _tags_body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object (Content-Type: application/json)"
    tags = body.get("tags")
    if not isinstance(tags, list) or not tags:
        return "tags must be a non-empty list"
    if not all(isinstance(tag, str) and tag for tag in tags):
        return "each tag must be a non-empty string"
    ttl = body.get("ttl")
    if ttl is not None and not (_is_int(ttl) and ttl > 0):
        return "ttl must be a positive number of seconds"
    return None


def _check_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown or ill-typed knobs: a typo must not leave the sandbox well-behaved."""
    unknown = sorted(set(knobs) - set(_DEFAULT_KNOBS))
    if unknown:
        raise ValueError(f"unknown knob(s): {', '.join(unknown)}")
    checked = {}
    for name, value in knobs.items():
        if isinstance(_DEFAULT_KNOBS[name], bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
        elif name == "status":
            if value is not None and not (_is_int(value) and 100 <= value <= 599):
                raise ValueError("status must be an HTTP status (100-599) or null")
        else:
            upper = 1.0 if name == "error_rate" else _KNOB_LIMIT_SECONDS
            if not (isinstance(value, int | float) and not isinstance(value, bool)):
                raise ValueError(f"{name} must be a number")
            if not 0 <= value <= upper:
                raise ValueError(f"{name} must be between 0 and {upper:g}")
            value = float(value)
        checked[name] = value
    return checked


def _shutdown(sock: socket.socket | None) -> None:
    """Cut the client's connection without an answer, as a server that went away does."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Sandbox:
    """What the request threads share: credentials, knobs, counters and tag state."""

    def __init__(
        self,
        connect_auth: str,
        retailer_id: str,
        core_api_key: str,
        core_api_secret: str,
        clock: _Clock,
    ) -> None:
        self.connect_auth = connect_auth
        self.retailer_id = retailer_id
        self.core_api_key = core_api_key
        self.core_api_secret = core_api_secret
        self.clock = clock
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._in_flight = 0
        self._clear()

    def _clear(self) -> None:
        """Forget history; `in_flight` is left alone since those calls are still running."""
        self._knobs = dict(_DEFAULT_KNOBS)
        self._error_counter = 0
        self._calls = 0
        self._calls_by_user: dict[str, int] = {}
        self._peak = self._in_flight
        self._core_calls: list[dict[str, Any]] = []
        self._tags: dict[str, dict[str, tuple[int, datetime | None]]] = {}

    def configure(self, knobs: dict[str, Any]) -> dict[str, Any]:
        checked = _check_knobs(knobs)
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

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self._calls,
                "calls_by_user": dict(self._calls_by_user),
                "in_flight": self._in_flight,
                "peak_concurrency": self._peak,
                "core_calls": [dict(call) for call in self._core_calls],
                "tag_state": {customer: _tag_list(tags) for customer, tags in self._tags.items()},
            }

    def answer(
        self,
        produce: Callable[[], tuple[int, dict[str, Any]]],
        *,
        connect_user: Any = None,
        core_call: dict[str, Any] | None = None,
    ) -> Response:
        """Count the call, apply the knobs, and answer with `produce()` unless a knob overrides."""
        with self._lock:
            if core_call is None:
                self._calls += 1
                if isinstance(connect_user, str):
                    self._calls_by_user[connect_user] = (
                        self._calls_by_user.get(connect_user, 0) + 1
                    )
            else:
                self._core_calls.append(core_call)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            latency = self._knobs["latency"]
        sock = request.environ.get("werkzeug.socket")
        streamed = False
        try:
            if self.closing.wait(latency) or not self._wait_while_hung():
                _shutdown(sock)
                return Response(status=503)
            with self._lock:
                knobs = dict(self._knobs)
                failing = self._next_call_fails(knobs["error_rate"])
            response = self._respond(knobs, failing, produce)
            if core_call is not None:
                with self._lock:
                    core_call["status"] = response.status_code
            if knobs["trickle"]:
                response.response = self._trickle(response.get_data(), knobs["trickle"], sock)
                response.call_on_close(self._leave)
                streamed = True
            return response
        finally:
            if not streamed:
                self._leave()

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

    def _respond(
        self,
        knobs: dict[str, Any],
        failing: bool,
        produce: Callable[[], tuple[int, dict[str, Any]]],
    ) -> Response:
        headers = {}
        if knobs["status"] is not None:
            status = knobs["status"]
            body = _error(_status_code_name(status), "forced by the sandbox's status knob")
            if status == 429:
                headers["Retry-After"] = "1"
        elif failing:
            status, body = 500, _error("INTERNAL", "injected by the sandbox's error_rate knob")
        elif knobs["garbage"]:
            return Response(_GARBAGE, 200, mimetype="text/html")
        else:
            status, body = produce()
        if knobs["huge"]:
            body = {**body, "padding": "x" * _HUGE_PADDING}
        data = json.dumps(body, ensure_ascii=False)
        return Response(data, status, headers, mimetype="application/json")

    def _trickle(self, data: bytes, delay: float, sock: socket.socket | None) -> Iterator[bytes]:
        """Send one byte per `delay` seconds; cut the connection if the server stops meanwhile."""
        for i in range(len(data)):
            if self.closing.wait(delay):
                _shutdown(sock)
                return
            yield data[i : i + 1]

    def user_offers(self, authorization: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        """Connect's get_user_offers, with SessionM's habit of errors inside HTTP 200."""
        if authorization != f"Basic {self.connect_auth}":
            return 401, _error("INVALID_API_KEY", "Authorization does not match the Connect key")
        problem = _connect_body_problem(body)
        if problem:
            return 400, _error("VALIDATION", problem)
        if body.get("retailer_id") != self.retailer_id:
            return 200, _error("ACCESS_DENIED", "this key has no access to that retailer_id")
        user_id = body["user_id"]
        wallet = _WALLETS.get(user_id) or (_GENERATED if user_id.startswith("user-") else None)
        if wallet is None:
            return 200, _error("user_not_found", f"no user with id {user_id}")
        spanish = (body.get("culture") or "en-US").lower().startswith("es")
        skip = body.get("skip") or 0
        take = _MAX_TAKE if body.get("take") is None else min(body["take"], _MAX_TAKE)
        offers, total = wallet.offers(self.clock().astimezone(UTC), spanish, skip, take)
        everything = "Todas las ofertas" if spanish else "All Offers"
        payload = {
            "user": {"opted_in": wallet.opted_in, "activated": wallet.activated},
            "user_id": user_id,
            "user_offers": offers,
            "total_records": total,
            "offer_groups": [{"id": _GROUP_ID, "name": everything, "sort_order": 0}],
            "offer_categories": [{"id": _CATEGORY_ID, "name": everything, "sort_order": 0}],
            "total_points": wallet.total_points,
            "available_points": wallet.available_points,
        }
        return 200, {"status": "ok", "payload": payload}

    def tag(
        self, api_key: str, username: str | None, password: str | None, user_id: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        """Core's customer tags: `ttl` sets an expiring tag, no `ttl` bumps a counter."""
        if (api_key, username, password) != (
            self.core_api_key,
            self.core_api_key,
            self.core_api_secret,
        ):
            return 401, _error("INVALID_API_KEY", "Basic auth or app key does not match Core")
        problem = _tags_body_problem(body)
        if problem:
            return 400, _error("VALIDATION", problem)
        if not _customer_exists(user_id):
            return 404, _error("NOT_FOUND", f"no customer with id {user_id}")
        now = self.clock().astimezone(UTC)
        ttl = body.get("ttl")
        with self._lock:
            tags = self._tags.setdefault(user_id, {})
            for name, (_, expires_at) in list(tags.items()):
                if expires_at is not None and expires_at <= now:
                    del tags[name]
            for name in body["tags"]:
                if ttl is None:
                    count, expires_at = tags.get(name, (0, None))
                    tags[name] = (count + 1, expires_at)
                else:
                    tags[name] = (1, now + timedelta(seconds=ttl))
            return 200, {"status": "ok", "payload": {"tags": _tag_list(tags)}}


def _tag_list(tags: dict[str, tuple[int, datetime | None]]) -> list[dict[str, Any]]:
    return [
        {
            "tag": name,
            "count": count,
            "expires_at": None if expires_at is None else _dotnet(expires_at, 0),
        }
        for name, (count, expires_at) in tags.items()
    ]


def create_sandbox_app(
    connect_auth: str = DEMO_CONNECT_AUTH,
    retailer_id: str = DEMO_RETAILER_ID,
    core_api_key: str = DEMO_CORE_API_KEY,
    core_api_secret: str = DEMO_CORE_API_SECRET,
    clock: _Clock | None = None,
) -> Flask:
    """Build the stand-in; credentials are parameters so tests can prove the proxy sends its own.

    `clock` returns an aware datetime; offer dates are computed from it at each request, so an
    offer seeded as expired is always expired.
    """
    sandbox = _Sandbox(connect_auth, retailer_id, core_api_key, core_api_secret, clock or _utc_now)
    app = Flask(__name__)
    app.extensions[_EXTENSION] = sandbox

    @app.post("/offers/api/2.0/offers/get_user_offers")
    def get_user_offers() -> Response:
        body = request.get_json(silent=True)
        authorization = request.headers.get("Authorization")
        return sandbox.answer(
            lambda: sandbox.user_offers(authorization, body),
            connect_user=body.get("user_id") if isinstance(body, dict) else None,
        )

    @app.post("/priv/v1/apps/<api_key>/users/<user_id>/tags", defaults={"external": False})
    @app.post("/priv/v1/apps/<api_key>/external/users/<user_id>/tags", defaults={"external": True})
    def tag_customer(api_key: str, user_id: str, external: bool) -> Response:
        body = request.get_json(silent=True)
        auth = request.authorization
        basic = auth is not None and auth.type == "basic"
        username = auth.username if basic else None
        password = auth.password if basic else None
        fields = body if isinstance(body, dict) else {}
        call = {
            "path": request.path,
            "user_id": user_id,
            "external": external,
            "tags": fields.get("tags"),
            "ttl": fields.get("ttl"),
            "at": time.time(),
        }
        return sandbox.answer(
            lambda: sandbox.tag(api_key, username, password, user_id, body), core_call=call
        )

    @app.route("/_sandbox/config", methods=["GET", "POST"])
    def config() -> tuple[Response, int] | Response:
        knobs = request.get_json(silent=True) if request.method == "POST" else {}
        if not isinstance(knobs, dict):
            return jsonify(_error("VALIDATION", "send a JSON object of knobs")), 400
        try:
            return jsonify(sandbox.configure(knobs))
        except ValueError as exc:
            return jsonify(_error("VALIDATION", str(exc))), 400

    @app.get("/_sandbox/stats")
    def stats() -> Response:
        return jsonify(sandbox.stats())

    @app.post("/_sandbox/reset")
    def reset() -> Response:
        return jsonify(sandbox.reset())

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request: benchmarks send thousands; errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SandboxServer:
    """The sandbox on a real socket (bound at construction, so `url` is known before start)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **app_kwargs: Any) -> None:
        self.app = create_sandbox_app(**app_kwargs)
        self._sandbox: _Sandbox = self.app.extensions[_EXTENSION]
        self._server = make_server(
            host, port, self.app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Serve from a daemon thread; a short poll interval keeps `stop()` fast."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sessionm-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until Ctrl-C, then close the socket."""
        try:
            with contextlib.suppress(KeyboardInterrupt):
                self._server.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop and close the port; calls held by `hang`, `latency` or `trickle` are cut off."""
        self._sandbox.close()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Set any subset of the knobs; returns them all. Raises ValueError on a bad one."""
        return self._sandbox.configure(knobs)

    def stats(self) -> dict[str, Any]:
        return self._sandbox.stats()

    def reset(self) -> None:
        self._sandbox.reset()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(host: str, port: int, **app_kwargs: Any) -> None:
    """Run the sandbox in the foreground, for `wallet-proxy sandbox`."""
    SandboxServer(host, port, **app_kwargs).serve_forever()
