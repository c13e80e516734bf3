"""`POST /v1/braze/triggers`: SessionM's campaign hands us a message for Braze.

Thin: the key, a deliverer to send it, the size cap, the body's rules, then the intake.
The answer is 202 only once the trigger is stored durably; a repeat (same Idempotency-Key
within 7 days, or the same body without a key within 10 minutes) answers the first
trigger's id and state.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, request

from ..auth import key_matches, presented_key
from ..errors import InvalidRequest, NotConfigured, Unauthorized
from ..idempotency import valid_key
from ..rules import json_body
from .running import check_delivered
from .schema import load_trigger_body
from .setup import triggers_of

bp = Blueprint("triggers", __name__, url_prefix="/v1/braze")

MAX_BODY_BYTES = 64 * 1024


@bp.before_request
def configured_key_and_size() -> None:
    triggers = triggers_of()
    if triggers is None:
        raise NotConfigured(
            "Braze triggers are not configured (BRAZE_REST_URL, BRAZE_REST_API_KEY, "
            "WALLET_PROXY_TRIGGER_KEYS)."
        )
    if not key_matches(presented_key(request), triggers.keys):
        raise Unauthorized("A valid trigger key (WALLET_PROXY_TRIGGER_KEYS) is required.")
    check_delivered(current_app)  # never a 202 that nothing will send
    # One byte over the cap, so a chunked body that goes on is told apart (rules.json_body).
    request.max_content_length = MAX_BODY_BYTES + 1


@bp.post("/triggers")
def accept_trigger():
    body = load_trigger_body(_json_body())
    key = request.headers.get("Idempotency-Key")
    if key is not None and not valid_key(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")
    triggers = triggers_of()
    assert triggers is not None  # checked before the request
    accepted = triggers.intake.accept(body, key)
    response = Response(
        json.dumps({"trigger_id": accepted.trigger_id, "status": accepted.state}),
        202,
        mimetype="application/json",
    )
    if not accepted.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _json_body() -> object:
    return json_body(
        request.get_data(cache=False),
        max_bytes=MAX_BODY_BYTES,
        example='{"braze_campaign_id": "...", "customer": {"external_id": "..."}}',
    )
