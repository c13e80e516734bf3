"""Braze webhooks to SessionM customer tags: `POST /v1/users/<id>/tags` (and external ids).

Braze holds only one of our API keys; the Core secret stays here. Views are thin:
the body's rules (wallet_proxy/rules.py, shared with `wallet-proxy tags import`), the
id rule and the Idempotency-Key are checked before SessionM is called, and every
failure is raised into the error tree.
"""

from __future__ import annotations

import json
import time

from flask import Blueprint, Flask, Response, request

from .auth import require_api_key
from .budget import Claim, Priority
from .container import Services, services
from .errors import InvalidRequest, NotConfigured
from .idempotency import Answer, valid_key
from .rules import check_customer_id, json_body, load_tags

bp = Blueprint("tags", __name__, url_prefix="/v1")


def init_app(app: Flask, found: Services) -> None:
    app.register_blueprint(bp)


MAX_BODY_BYTES = 16 * 1024


bp.before_request(require_api_key)


@bp.before_request
def require_core_and_small_body():
    if services().core is None:
        raise NotConfigured(
            "SessionM Core is not configured (SESSIONM_CORE_URL, SESSIONM_CORE_API_KEY, "
            "SESSIONM_CORE_API_SECRET)."
        )
    # One byte over the cap, so a chunked body that goes on is told apart (rules.json_body;
    # werkzeug alone stops at the limit, which let valid JSON and 1 MB of spaces through).
    request.max_content_length = MAX_BODY_BYTES + 1


@bp.post("/users/<path:user_id>/tags", defaults={"external": False})
@bp.post("/external-users/<path:user_id>/tags", defaults={"external": True})
def add_tags(user_id: str, external: bool):
    check_customer_id(user_id)
    body = load_tags(_json_body())
    key = request.headers.get("Idempotency-Key")
    if key is not None and not valid_key(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")

    found = services()

    def call() -> Answer:
        assert found.core is not None  # require_core_and_small_body
        started = time.monotonic()
        # Core's budget first, waiting at most half the timeout so the call keeps the rest.
        # A refusal is a 503 with the queue's Retry-After, and releases the Idempotency-Key.
        timeout = found.settings.core_timeout
        found.core_budget.acquire(Claim(Priority.WAITING, started + timeout / 2))
        deadline = started + timeout
        found.core.add_tags(
            user_id, body["tags"], body["ttl"], external=external, deadline=deadline
        )
        id_type = "external" if external else "user"
        return Answer(200, {"id_type": id_type, "id": user_id, **body})

    if key is None:
        answer, replayed = call(), False
    else:
        route = "external-users" if external else "users"
        assert found.idempotency is not None  # there with Core (require_core_and_small_body)
        answer, replayed = found.idempotency.run(
            (route, user_id, key), dict(body), call, resend_safe=body["ttl"] is not None
        )
    response = Response(json.dumps(answer.body), answer.status, mimetype="application/json")
    if answer.retry_after is not None:
        response.headers["Retry-After"] = str(answer.retry_after)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _json_body() -> object:
    return json_body(
        request.get_data(cache=False),
        max_bytes=MAX_BODY_BYTES,
        example='{"tags": ["braze_test"], "ttl": 2592000}',
    )
