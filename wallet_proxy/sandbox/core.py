"""Core's customer tags: `ttl` sets an expiring tag, no `ttl` bumps a counter."""

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Response, request

from .customers import customer_exists
from .state import Sandbox
from .wire import Clock, dotnet, error, is_int

DEMO_CORE_API_KEY = "demo-core-key"
DEMO_CORE_API_SECRET = "demo-core-secret"  # noqa: S105 - public demo credential

_Tags = dict[str, tuple[int, datetime | None]]
"""One customer's tags: name -> (count, expiry or None)."""


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object (Content-Type: application/json)"
    tags = body.get("tags")
    if not isinstance(tags, list) or not tags:
        return "tags must be a non-empty list"
    if not all(isinstance(tag, str) and tag for tag in tags):
        return "each tag must be a non-empty string"
    ttl = body.get("ttl")
    if ttl is not None and not (is_int(ttl) and ttl > 0):
        return "ttl must be a positive number of seconds"
    return None


def _tag_list(tags: _Tags) -> list[dict[str, Any]]:
    return [
        {
            "tag": name,
            "count": count,
            "expires_at": None if expires_at is None else dotnet(expires_at, 0),
        }
        for name, (count, expires_at) in tags.items()
    ]


class Core:
    """The tags API; its stats are `core_calls` (each call as sent) and `tag_state`.

    Tags change while an answer is produced, outside the sandbox's lock, so they have a lock of
    their own (always taken after the sandbox's).
    """

    def __init__(self, api_key: str, api_secret: str, clock: Clock) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.clock = clock
        self._tags_lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self._calls: list[dict[str, Any]] = []
        with self._tags_lock:
            self._tags: dict[str, _Tags] = {}

    def stats(self) -> dict[str, Any]:
        with self._tags_lock:
            tag_state = {customer: _tag_list(tags) for customer, tags in self._tags.items()}
        return {"core_calls": [dict(call) for call in self._calls], "tag_state": tag_state}

    def register(self, app: Flask, sandbox: Sandbox) -> None:
        @app.post("/priv/v1/apps/<api_key>/users/<user_id>/tags", defaults={"external": False})
        @app.post(
            "/priv/v1/apps/<api_key>/external/users/<user_id>/tags", defaults={"external": True}
        )
        def tag_customer(api_key: str, user_id: str, external: bool) -> Response:
            body = request.get_json(silent=True)
            auth = request.authorization
            username = password = None
            if auth is not None and auth.type == "basic":
                username, password = auth.username, auth.password
            fields = body if isinstance(body, dict) else {}
            call = {
                "path": request.path,
                "user_id": user_id,
                "external": external,
                "tags": fields.get("tags"),
                "ttl": fields.get("ttl"),
                "at": time.time(),
            }

            def answered(status: int) -> None:
                call["status"] = status

            return sandbox.answer(
                lambda: self.tag(api_key, username, password, user_id, body),
                arrived=lambda: self._calls.append(call),
                answered=answered,
            )

    def tag(
        self, api_key: str, username: str | None, password: str | None, user_id: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if (api_key, username, password) != (self.api_key, self.api_key, self.api_secret):
            return 401, error("INVALID_API_KEY", "Basic auth or app key does not match Core")
        problem = _body_problem(body)
        if problem:
            return 400, error("VALIDATION", problem)
        if not customer_exists(user_id):
            return 404, error("NOT_FOUND", f"no customer with id {user_id}")
        now = self.clock().astimezone(UTC)
        ttl = body.get("ttl")
        with self._tags_lock:
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
