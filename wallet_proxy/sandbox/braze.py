"""Braze's trigger endpoints and `/users/track`, stood in for: the demo and the tests need no
Braze.

`POST /campaigns/trigger/send` and `POST /canvas/trigger/send` check what Braze checks
(the key, exactly one id, at most 50 recipients or a broadcast without them, each
recipient named by exactly one of `external_user_id`, `braze_id`, `user_alias` and
`email`, the last with a `prioritization`, trigger properties only for campaigns and
context only for Canvases, 50 KB per object), answer as Braze does (`success` with a
`dispatch_id`, rate-limit headers on every answer) and record every call and every
message delivered, so a test can prove who got what, once. Like Braze, a call that
names one recipient twice, or two recipients with one email address, delivers to them
once ("Braze dedupes the user"). `POST /users/track` keeps profiles (profiles.py), within
Braze's burst limit: `track_limit` requests every `track_window` seconds ("3,000 requests
per three seconds"), then 429 with X-RateLimit-* until the window ends.

Its knobs are its own (`/_sandbox/braze/config`), so Braze can fail while SessionM
answers: `status` forces an answer with the body Braze (or the gateway in front of it)
gives (for the next `times` calls, or until changed), with `retry_after` on a 429 or a
5xx; `latency` slows each answer (a timeout for our client) and `drop` cuts the
connection, both after Braze has acted on the call; `hold_after` holds every answer, also
after acting, once Braze has that many messages, until it is set back to null (a test
kills the caller at a point it chose); `maintenance` answers 202 `queued`; `paused` lists
campaign and Canvas ids answered 201 with Braze's `notice` and not sent; `reject` lists
recipients (any identifier) Braze refuses with a 400; `remaining` sets
X-RateLimit-Remaining (0 asks callers to wait for the reset); `max_objects` caps the
objects of a `/users/track` request in total.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import uuid
from typing import Any

from flask import Flask, Response, jsonify, request

from .profiles import Profiles, track_problem
from .state import Sandbox

DEMO_BRAZE_API_KEY = "demo-braze-rest-key"
MAX_RECIPIENTS = 50
MAX_OBJECT_BYTES = 50 * 1024
HOURLY_LIMIT = 250_000
TRACK = "track"  # the kind of a /users/track call, beside the campaign and Canvas sends
KNOB_LIMIT_SECONDS = 3600.0

DEFAULT_KNOBS: dict[str, Any] = {
    "status": None,
    "times": None,
    "retry_after": None,
    "latency": 0.0,
    "drop": False,
    "hold_after": None,
    "maintenance": False,
    "paused": [],
    "reject": [],
    "remaining": None,
    "reset_in": 3600.0,
    "track_limit": 3000,
    "track_window": 3.0,
    "max_objects": None,
}
MAX_LISTED = 1000  # ids in a list knob
# What the `status` knob answers: Braze's own words for its errors (its errors page), and
# for 502 and 504 the gateway's page, which is not JSON.
_GATEWAY_PAGE = "<html><head><title>{0}</title></head><body><h1>{0}</h1></body></html>"
FORCED_ANSWERS: dict[int, tuple[str, str]] = {
    401: ("application/json", '{"message": "Invalid API key"}'),
    403: ("application/json", '{"message": "Access Denied"}'),
    404: ("application/json", '{"message": "Not Found"}'),
    429: ("application/json", '{"message": "Rate Limited"}'),
    500: ("application/json", '{"message": "Internal Server Error"}'),
    502: ("text/html", _GATEWAY_PAGE.format("502 Bad Gateway")),
    503: ("application/json", '{"message": "Service Unavailable"}'),
    504: ("text/html", _GATEWAY_PAGE.format("504 Gateway Time-out")),
}
# Braze's post_send_triggered_canvases page quotes the Canvas's notice. Its campaign page
# quotes none; the campaign's here is the same sentence, as integrations report seeing it.
PAUSED_NOTICES = {
    "campaign": "The campaign is paused. Resume the campaign to ensure trigger requests "
    "will take effect.",
    "canvas": "The Canvas is paused. Resume the Canvas to ensure trigger requests will take "
    "effect.",
}
IDENTIFIERS = ("external_user_id", "braze_id", "user_alias", "email")
PRIORITIES = ("identified", "unidentified", "most_recently_updated", "least_recently_updated")


def check_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown or ill-typed knobs: a typo must not leave Braze well-behaved."""
    unknown = sorted(set(knobs) - set(DEFAULT_KNOBS))
    if unknown:
        raise ValueError(f"unknown Braze knob(s): {', '.join(unknown)}")
    for name, value in knobs.items():
        if name in ("drop", "maintenance") and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        if name == "status" and value is not None and not _whole(value, 100, 599):
            raise ValueError("status must be an HTTP status (100-599) or null")
        if (
            name in ("times", "remaining", "hold_after")
            and value is not None
            and not _whole(value, 0, 10**9)
        ):
            raise ValueError(f"{name} must be a whole number or null")
        if name == "track_limit" and not _whole(value, 1, 10**6):
            raise ValueError("track_limit must be requests per track_window, 1 or more")
        if name == "track_window" and not (_number(value) and 0.1 <= value <= 60):
            raise ValueError("track_window must be seconds from 0.1 to 60")
        if name == "max_objects" and value is not None and not _whole(value, 1, 225):
            raise ValueError("max_objects must be 1 to 225 objects, or null")
        seconds = name in ("latency", "reset_in", "retry_after") and value is not None
        if seconds and not (_number(value) and 0 <= value <= KNOB_LIMIT_SECONDS):
            raise ValueError(f"{name} must be seconds from 0 to {KNOB_LIMIT_SECONDS:g}")
        listed = isinstance(value, list) and len(value) <= MAX_LISTED
        if name in ("paused", "reject") and not (
            listed and all(isinstance(v, str) for v in value)
        ):
            raise ValueError(f"{name} must be a list of at most {MAX_LISTED} ids")
    return dict(knobs)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def body_problem(kind: str, body: Any) -> str | None:
    """What Braze would answer 400 for, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    id_name, props, other = (
        ("campaign_id", "trigger_properties", "context")
        if kind == "campaign"
        else ("canvas_id", "context", "trigger_properties")
    )
    if not isinstance(body.get(id_name), str) or not body[id_name]:
        return f"{id_name} is required"
    if other in body:
        return f"{other} is not accepted by this endpoint"
    recipients = body.get("recipients")
    if body.get("broadcast") is True:
        if recipients:
            return "recipients are not allowed with broadcast"
    elif not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        return f"recipients must list 1 to {MAX_RECIPIENTS} users unless broadcast is true"
    objects = [body.get(props) or {}]
    for recipient in recipients or []:
        problem = recipient_problem(recipient)
        if problem is not None:
            return problem
        if other in recipient:
            return f"{other} is not accepted by this endpoint"
        objects += [recipient.get(props) or {}, recipient.get("attributes") or {}]
    if any(not isinstance(o, dict) or _size(o) > MAX_OBJECT_BYTES for o in objects):
        return f"{props} and attributes must be objects of at most 50 KB"
    return None


def recipient_problem(recipient: Any) -> str | None:
    """Braze's recipients object: exactly one identifier, an email with a prioritization."""
    if not isinstance(recipient, dict):
        return "each recipient must be an object"
    given = [name for name in IDENTIFIERS if name in recipient]
    if len(given) != 1:
        return f"each recipient needs exactly one of {', '.join(IDENTIFIERS)}"
    value = recipient[given[0]]
    if given[0] == "user_alias":
        names = ("alias_name", "alias_label")
        if not isinstance(value, dict) or not all(isinstance(value.get(n), str) for n in names):
            return "a user_alias needs alias_name and alias_label"
    elif not isinstance(value, str) or not value:
        return f"{given[0]} must be a string"
    if given[0] == "email":
        order = recipient.get("prioritization")
        if not isinstance(order, list) or not order or not all(p in PRIORITIES for p in order):
            return "an email recipient needs a prioritization"
        if {"identified", "unidentified"} <= set(order):
            return "a prioritization holds only one of identified and unidentified"
    elif "prioritization" in recipient:
        return "prioritization goes with email only"
    return None


def recipient_of(recipient: dict) -> tuple[str, str]:
    """Who a (checked) recipient names, as (identifier, value): an address in any case is
    one address."""
    name = next(name for name in IDENTIFIERS if name in recipient)
    value = recipient[name]
    if name == "user_alias":
        return name, f"{value['alias_label']}:{value['alias_name']}"
    return name, value.casefold() if name == "email" else value


def addresses(recipient: dict) -> set[str]:
    """The email addresses a (checked) recipient targets: its identifier, or the email its
    attributes set before the send."""
    found = {recipient["email"].casefold()} if "email" in recipient else set()
    email = (recipient.get("attributes") or {}).get("email")
    if isinstance(email, str) and email:
        found.add(email.casefold())
    return found


def deduplicated(recipients: list[dict]) -> list[dict]:
    """Braze's recipient deduping: "if there exists a duplicated recipient targeting the
    same address (that is, email, push), Braze dedupes the user", leaving one: the first."""
    kept: list[dict] = []
    seen: set[tuple[str, str]] = set()
    sent_to: set[str] = set()
    for recipient in recipients:
        who, where = recipient_of(recipient), addresses(recipient)
        if who in seen or where & sent_to:
            continue
        kept.append(recipient)
        seen.add(who)
        sent_to |= where
    return kept


class Braze:
    """The trigger endpoints and /users/track; stats are `braze_calls` (each call),
    `braze_messages` and `braze_held` (the calls `hold_after` holds now); `profiles()` what
    /users/track was told.

    Cleared with the rest of the sandbox by `/_sandbox/reset`, which also lets held calls go.
    """

    def __init__(self, api_key: str = DEMO_BRAZE_API_KEY) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()  # its own: the knobs and history are Braze's alone
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._profiles = Profiles()
        self._held = 0  # not history: those calls are still waiting
        self.clear()

    def clear(self) -> None:
        with self._changed:
            self._knobs = dict(DEFAULT_KNOBS)
            self._calls: list[dict[str, Any]] = []
            self._messages: list[dict[str, Any]] = []
            self._used = 0
            self._track_window, self._track_used = 0.0, 0
            self._changed.notify_all()
        self._profiles.clear()

    def configure(self, knobs: dict[str, Any]) -> dict[str, Any]:
        checked = check_knobs(knobs)
        with self._changed:
            self._knobs.update(checked)
            self._changed.notify_all()
            return dict(self._knobs)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "braze_calls": [dict(call) for call in self._calls],
                "braze_messages": [dict(message) for message in self._messages],
                "braze_held": self._held,
            }

    def profiles(self) -> dict[str, dict[str, Any]]:
        """Each profile /users/track was told about, by "identifier:value": its attributes
        and when each was set."""
        return self._profiles.snapshot()

    def register(self, app: Flask, sandbox: Sandbox) -> None:
        self._closing = sandbox.closing

        @app.post("/campaigns/trigger/send", defaults={"kind": "campaign"})
        @app.post("/canvas/trigger/send", defaults={"kind": "canvas"})
        def trigger_send(kind: str) -> Response:
            return self._answer(kind)

        @app.post("/users/track")
        def users_track() -> Response:
            return self._answer(TRACK)

        @app.route("/_sandbox/braze/config", methods=["GET", "POST"])
        def braze_config() -> tuple[Response, int] | Response:
            knobs = request.get_json(silent=True) if request.method == "POST" else {}
            if not isinstance(knobs, dict):
                return jsonify({"message": "send a JSON object of knobs"}), 400
            try:
                return jsonify(self.configure(knobs))
            except ValueError as exc:
                return jsonify({"message": str(exc)}), 400

        @app.get("/_sandbox/braze/stats")
        def braze_stats() -> Response:
            return jsonify(self.stats())

        @app.get("/_sandbox/braze/profiles")
        def braze_profiles() -> Response:
            return jsonify(self.profiles())

    def _answer(self, kind: str) -> Response:
        body = request.get_json(silent=True)
        now = time.time()
        call: dict[str, Any] = {"kind": kind, "body": body, "at": now}
        with self._lock:
            knobs = dict(self._knobs)
            forced = knobs["status"]
            if forced is not None and knobs["times"] is not None:
                if knobs["times"] == 0:
                    forced = None
                else:
                    self._knobs["times"] = knobs["times"] - 1
            self._calls.append(call)
            limit, used, reset = self._count(kind, knobs, now)
            before = len(self._messages)
        over = used > limit
        status, mimetype, answer = self._produce(kind, body, knobs, forced, now, call, over)
        call["status"] = status
        # Slow, held or cut off after Braze has acted: the caller can't know it was delivered.
        if (
            (knobs["latency"] and self._closing.wait(knobs["latency"]))
            or not self._hold(before)
            or knobs["drop"]
        ):
            call["status"] = "dropped"
            _cut(request.environ.get("werkzeug.socket"))
            return Response(status=500)
        remaining = knobs["remaining"]
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(
                remaining if remaining is not None else max(0, limit - used)
            ),
            "X-RateLimit-Reset": str(reset),
        }
        if (status == 429 or 500 <= status < 600) and knobs["retry_after"] is not None:
            headers["Retry-After"] = str(knobs["retry_after"])
        return Response(answer, status, headers, mimetype=mimetype)

    def _count(self, kind: str, knobs: dict, now: float) -> tuple[int, int, int]:
        """(limit, calls used of it, when it resets in epoch seconds) for this call's rate
        limit: the hour's for the sends, the burst window's for /users/track (its end,
        rounded up: a caller waiting for it finds the window over). Called with the lock
        held."""
        if kind != TRACK:
            self._used += 1
            return HOURLY_LIMIT, self._used, int(now + knobs["reset_in"])
        window = knobs["track_window"]
        start = math.floor(now / window) * window
        if start != self._track_window:
            self._track_window, self._track_used = start, 0
        self._track_used += 1
        return knobs["track_limit"], self._track_used, math.ceil(start + window)

    def _hold(self, before: int) -> bool:
        """Wait while `hold_after` is at most the messages Braze had before this call, in
        short slices; False if the server stopped meanwhile."""
        with self._changed:
            if not self._holding(before):
                return True
            self._held += 1
            try:
                while self._holding(before) and not self._closing.is_set():
                    self._changed.wait(0.05)
            finally:
                self._held -= 1
        return not self._closing.is_set()

    def _holding(self, before: int) -> bool:
        limit = self._knobs["hold_after"]
        return limit is not None and before >= limit

    def _produce(
        self,
        kind: str,
        body: Any,
        knobs: dict,
        forced: int | None,
        now: float,
        call: dict,
        over: bool,
    ) -> tuple[int, str, str]:
        """The answer's status, media type and body; what was delivered goes in the stats."""
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _json(401, {"message": "Invalid API key"})
        if forced is not None:
            mimetype, text = FORCED_ANSWERS.get(forced, ("application/json", ""))
            return (
                forced,
                mimetype,
                text or json.dumps({"message": f"forced by the sandbox's status knob ({forced})"}),
            )
        if over:
            return 429, *FORCED_ANSWERS[429]
        if kind == TRACK:
            problem = track_problem(body, knobs["max_objects"])
            if problem is not None:
                return _json(400, {"message": problem})
            return _json(201, self._profiles.track(body, reject=knobs["reject"], now=now))
        problem = body_problem(kind, body)
        if problem is None:
            named = [recipient_of(r)[1] for r in body.get("recipients") or []]
            refused = [value for value in named if value in knobs["reject"]]
            if refused:
                problem = f"invalid recipient(s): {', '.join(refused)}"
        if problem is not None:
            return _json(400, {"message": problem})
        dispatch_id = uuid.uuid4().hex
        target = body["campaign_id" if kind == "campaign" else "canvas_id"]
        if target in knobs["paused"]:  # Braze takes the call and sends nothing
            notice = PAUSED_NOTICES[kind]
            return _json(201, {"notice": notice, "dispatch_id": dispatch_id, "message": "success"})
        props = "trigger_properties" if kind == "campaign" else "context"
        recipients = body.get("recipients") or []
        delivered = deduplicated(recipients) if recipients else [{}]
        with self._lock:
            call["deduplicated"] = len(recipients) - len(delivered) if recipients else 0
            for recipient in delivered:
                self._messages.append(
                    {
                        "kind": kind,
                        "target": target,
                        "external_user_id": recipient.get("external_user_id"),
                        "recipient": {n: recipient[n] for n in IDENTIFIERS if n in recipient},
                        "properties": {**(body.get(props) or {}), **(recipient.get(props) or {})},
                        "attributes": recipient.get("attributes") or {},
                        "broadcast": body.get("broadcast") is True,
                        "dispatch_id": dispatch_id,
                        "at": now,
                    }
                )
                if recipient.get("attributes"):
                    self._profiles.update_existing(recipient, recipient["attributes"], now)
        if knobs["maintenance"]:
            return _json(202, {"message": "queued"})
        return _json(201, {"message": "success", "dispatch_id": dispatch_id})


def _json(status: int, answer: dict) -> tuple[int, str, str]:
    return status, "application/json", json.dumps(answer)


def _cut(sock: socket.socket | None) -> None:
    """Close the connection without an answer, as a Braze that went away mid-call does."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
