"""`POST /v1/users/<id>/tags` and `POST /v1/external-users/<id>/tags`, in both modes.

Braze holds only one of our API keys; the Core secret stays here. Views are thin: the
body's rules (wallet_proxy/rules.py, shared with `wallet-proxy tags import`), the id rule
and the Idempotency-Key are checked first, then the tagging is queued (202 once stored)
or relayed (direct.py), and every failure is raised into the error tree.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from ..auth import require_api_key
from ..container import services
from ..errors import InvalidRequest, NotConfigured
from ..idempotency import Answer, valid_key
from ..rules import check_customer_id, json_body, load_tags
from .direct import relay
from .model import Tagging, state_word
from .setup import queued_tags_of

bp = Blueprint("tags", __name__, url_prefix="/v1")

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
    tagging = Tagging(user_id, external, tuple(body["tags"]), body["ttl"])
    queued = queued_tags_of()
    if queued is None:
        answer, replayed = relay(services(), tagging, key)
    else:
        accepted = queued.intake.accept(tagging, key)
        status = {"tagging_id": accepted.trigger_id, "status": state_word(accepted.state)}
        answer, replayed = Answer(202, {**tagging.answer(), **status}), not accepted.created
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
