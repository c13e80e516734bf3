"""Braze's two trigger endpoints, stood in for: the demo and the tests need no Braze.

`POST /campaigns/trigger/send` and `POST /canvas/trigger/send` check what Braze checks
(the key, exactly one id, at most 50 recipients or a broadcast without them, trigger
properties only for campaigns and context only for Canvases, 50 KB per object), answer
as Braze does (`success` with a `dispatch_id`, rate-limit headers on every answer) and
record every call and every message delivered, so a test can prove who got what, once.

Its knobs are its own (`/_sandbox/braze/config`), so Braze can fail while SessionM
answers: `status` forces an answer (for the next `times` calls, or until changed) with
`retry_after` on 429/503; `latency` slows each answer (a timeout for our client) and
`drop` cuts the connection, both after Braze has acted on the call; `hold_after` holds
every answer, also after acting, once Braze has that many messages, until it is set back
to null (a test kills the caller at a point it chose); `maintenance` answers 202
`queued`; `reject` lists external ids Braze refuses with a 400; `remaining` sets
X-RateLimit-Remaining (0 asks callers to wait for the reset).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from typing import Any

from flask import Flask, Response, jsonify, request

from .state import Sandbox

DEMO_BRAZE_API_KEY = "demo-braze-rest-key"
MAX_RECIPIENTS = 50
MAX_OBJECT_BYTES = 50 * 1024
HOURLY_LIMIT = 250_000
KNOB_LIMIT_SECONDS = 3600.0

DEFAULT_KNOBS: dict[str, Any] = {
    "status": None,
    "times": None,
    "retry_after": None,
    "latency": 0.0,
    "drop": False,
    "hold_after": None,
    "maintenance": False,
    "reject": [],
    "remaining": None,
    "reset_in": 3600.0,
}


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
        seconds = name in ("latency", "reset_in", "retry_after") and value is not None
        if seconds and not (_number(value) and 0 <= value <= KNOB_LIMIT_SECONDS):
            raise ValueError(f"{name} must be seconds from 0 to {KNOB_LIMIT_SECONDS:g}")
        if name == "reject" and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise ValueError("reject must be a list of external ids")
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
    seen = set()
    for recipient in recipients or []:
        if not isinstance(recipient, dict) or not isinstance(
            recipient.get("external_user_id"), str
        ):
            return "each recipient needs an external_user_id"
        if other in recipient:
            return f"{other} is not accepted by this endpoint"
        if recipient["external_user_id"] in seen:
            return f"recipient {recipient['external_user_id']} appears twice"
        seen.add(recipient["external_user_id"])
        objects += [recipient.get(props) or {}, recipient.get("attributes") or {}]
    if any(not isinstance(o, dict) or _size(o) > MAX_OBJECT_BYTES for o in objects):
        return f"{props} and attributes must be objects of at most 50 KB"
    return None


class Braze:
    """The trigger endpoints; stats are `braze_calls` (each call), `braze_messages` and
    `braze_held` (the calls `hold_after` holds now).

    Cleared with the rest of the sandbox by `/_sandbox/reset`, which also lets held calls go.
    """

    def __init__(self, api_key: str = DEMO_BRAZE_API_KEY) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()  # its own: the knobs and history are Braze's alone
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._held = 0  # not history: those calls are still waiting
        self.clear()

    def clear(self) -> None:
        with self._changed:
            self._knobs = dict(DEFAULT_KNOBS)
            self._calls: list[dict[str, Any]] = []
            self._messages: list[dict[str, Any]] = []
            self._used = 0
            self._changed.notify_all()

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

    def register(self, app: Flask, sandbox: Sandbox) -> None:
        self._closing = sandbox.closing

        @app.post("/campaigns/trigger/send", defaults={"kind": "campaign"})
        @app.post("/canvas/trigger/send", defaults={"kind": "canvas"})
        def trigger_send(kind: str) -> Response:
            return self._answer(kind)

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
            self._used += 1
            used = self._used
            before = len(self._messages)
        status, answer = self._produce(kind, body, knobs, forced, now)
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
            "X-RateLimit-Limit": str(HOURLY_LIMIT),
            "X-RateLimit-Remaining": str(
                remaining if remaining is not None else max(0, HOURLY_LIMIT - used)
            ),
            "X-RateLimit-Reset": str(int(now + knobs["reset_in"])),
        }
        if status in (429, 503) and knobs["retry_after"] is not None:
            headers["Retry-After"] = str(knobs["retry_after"])
        return Response(json.dumps(answer), status, headers, mimetype="application/json")

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
        self, kind: str, body: Any, knobs: dict, forced: int | None, now: float
    ) -> tuple[int, dict]:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"message": "Invalid API key"}
        if forced is not None:
            return forced, {"message": f"forced by the sandbox's status knob ({forced})"}
        problem = body_problem(kind, body)
        if problem is None:
            refused = [
                r["external_user_id"]
                for r in body.get("recipients") or []
                if r["external_user_id"] in knobs["reject"]
            ]
            if refused:
                problem = f"invalid recipient(s): {', '.join(refused)}"
        if problem is not None:
            return 400, {"message": problem}
        dispatch_id = uuid.uuid4().hex
        props = "trigger_properties" if kind == "campaign" else "context"
        target = body["campaign_id" if kind == "campaign" else "canvas_id"]
        with self._lock:
            for recipient in body.get("recipients") or [{"external_user_id": None}]:
                self._messages.append(
                    {
                        "kind": kind,
                        "target": target,
                        "external_user_id": recipient["external_user_id"],
                        "properties": {**(body.get(props) or {}), **(recipient.get(props) or {})},
                        "attributes": recipient.get("attributes") or {},
                        "broadcast": body.get("broadcast") is True,
                        "dispatch_id": dispatch_id,
                        "at": now,
                    }
                )
        if knobs["maintenance"]:
            return 202, {"message": "queued"}
        return 201, {"message": "success", "dispatch_id": dispatch_id}


def _cut(sock: socket.socket | None) -> None:
    """Close the connection without an answer, as a Braze that went away mid-call does."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
