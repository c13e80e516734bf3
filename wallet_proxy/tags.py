"""Braze webhooks to SessionM customer tags: `POST /v1/users/<id>/tags` (and external ids).

Braze holds only one of our API keys; the Core secret stays here. Views are thin:
the body schema, the id rule and the Idempotency-Key are checked before SessionM is
called, and every failure is raised into the error tree. The schema is also the rule
for each row of `wallet-proxy tags import`.
"""

from __future__ import annotations

import json
import logging
import re
import time

from flask import Blueprint, Flask, Response, current_app, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from .auth import require_api_key
from .errors import InvalidRequest, NotConfigured
from .idempotency import Answer, Idempotency, MemoryStore, RedisStore, valid_key
from .sessionm import connect_timeout_for, pooled_session
from .sessionm_core import CoreClient

log = logging.getLogger(__name__)

bp = Blueprint("tags", __name__, url_prefix="/v1")

MAX_BODY_BYTES = 16 * 1024
MAX_TAGS = 20
MAX_TTL = 31_536_000
TAG_RULE = "1 to 64 characters of letters, digits, _ - . :"
TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
ID_RULE = "1 to 255 characters without control characters, and not '.' or '..'"
ID_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,255}\Z")
# Room for the call itself (the deadline) and a margin, before a pending key is abandoned.
LEASE_MARGIN = 30.0


class TagsBody(Schema):
    """`{"tags": [...], "ttl": n}`; an unknown field is refused, not ignored (a typo of `ttl`
    would otherwise silently turn an expiring tag into a counter)."""

    class Meta:
        unknown = RAISE

    tags = fields.List(
        fields.String(
            validate=validate.Regexp(TAG_RE, error=f"must be {TAG_RULE} (like braze_test).")
        ),
        required=True,
        validate=validate.Length(1, MAX_TAGS, error=f"must hold 1 to {MAX_TAGS} tags."),
    )
    ttl = fields.Integer(
        strict=True,
        load_default=None,
        allow_none=False,
        validate=validate.Range(1, MAX_TTL, error=f"must be a whole number from 1 to {MAX_TTL}."),
        error_messages={
            "invalid": f"must be a whole number from 1 to {MAX_TTL} (leave it out for a counter).",
            "null": "can't be null: leave it out for a counter tag.",
        },
    )

    @validates("tags")
    def _distinct(self, value: list[str], **_kwargs) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("must not repeat a tag.")


TAGS_BODY = TagsBody()


_PLAIN = {
    "Unknown field.": "is not a known field (only tags and ttl).",
    "Missing data for required field.": "is required.",
    "Not a valid list.": "must be a list of tags.",
    "Not a valid string.": "must be a string.",
}


def problem(messages: dict) -> str:
    """Marshmallow's nested messages as one line naming the field: `tags[2] must be ...`."""
    label, found = "", messages
    while isinstance(found, dict):
        name, found = min(found.items(), key=lambda item: str(item[0]))
        label += f"[{name}]" if isinstance(name, int) else name
    if label == "_schema":
        return 'The body must be a JSON object like {"tags": ["braze_test"], "ttl": 2592000}.'
    return f"{label[:64]} {_PLAIN.get(found[0], found[0])}"


def load_body(data: object) -> dict:
    """A decoded JSON body to `{"tags", "ttl"}`, or InvalidRequest naming the problem."""
    try:
        return TAGS_BODY.load(data)
    except ValidationError as exc:
        raise InvalidRequest(problem(exc.messages)) from None


def check_id(user_id: str) -> None:
    if not ID_RE.match(user_id) or user_id in (".", ".."):
        raise InvalidRequest(f"The customer id must be {ID_RULE}.")


def init_app(app: Flask) -> None:
    """The Core client (None without Core settings), the idempotency store, the routes."""
    settings = app.config["SETTINGS"]
    app.extensions["sessionm_core"] = (
        CoreClient(
            settings.sessionm_core_url,
            settings.sessionm_core_api_key,
            settings.sessionm_core_api_secret,
            session=pooled_session(settings.upstream_concurrency),
            connect_timeout=connect_timeout_for(settings.deadline),
            read_timeout=settings.deadline,
        )
        if settings.core_configured
        else None
    )
    redis_client = app.extensions.get("redis")
    store = RedisStore(redis_client) if redis_client is not None else MemoryStore()
    if redis_client is None and settings.core_configured:
        log.warning(
            "Idempotency-Key replay is per process without WALLET_PROXY_REDIS_URL: with "
            "several workers, a retried counter-tag call may be applied twice"
        )
    app.extensions["idempotency"] = Idempotency(store, lease=settings.deadline + LEASE_MARGIN)
    app.register_blueprint(bp)


bp.before_request(require_api_key)


@bp.before_request
def require_core_and_small_body():
    if current_app.extensions["sessionm_core"] is None:
        raise NotConfigured(
            "SessionM Core is not configured (SESSIONM_CORE_URL, SESSIONM_CORE_API_KEY, "
            "SESSIONM_CORE_API_SECRET)."
        )
    request.max_content_length = MAX_BODY_BYTES


@bp.post("/users/<path:user_id>/tags", defaults={"external": False})
@bp.post("/external-users/<path:user_id>/tags", defaults={"external": True})
def add_tags(user_id: str, external: bool):
    check_id(user_id)
    body = load_body(_json_body())
    key = request.headers.get("Idempotency-Key")
    if key is not None and not valid_key(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")

    def call() -> Answer:
        core = current_app.extensions["sessionm_core"]
        deadline = time.monotonic() + current_app.config["SETTINGS"].deadline
        core.add_tags(user_id, body["tags"], body["ttl"], external=external, deadline=deadline)
        id_type = "external" if external else "user"
        return Answer(200, {"id_type": id_type, "id": user_id, **body})

    if key is None:
        answer, replayed = call(), False
    else:
        route = "external-users" if external else "users"
        answer, replayed = current_app.extensions["idempotency"].run(
            (route, user_id, key), body, call, resend_safe=body["ttl"] is not None
        )
    response = Response(json.dumps(answer.body), answer.status, mimetype="application/json")
    if answer.retry_after is not None:
        response.headers["Retry-After"] = str(answer.retry_after)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _json_body() -> object:
    try:
        return json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays
        raise InvalidRequest(
            'The body must be JSON like {"tags": ["braze_test"], "ttl": 2592000}.'
        ) from None
