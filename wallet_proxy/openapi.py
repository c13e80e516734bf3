"""The contract: `GET /openapi.json`, an OpenAPI 3.1 document of every API route.

Built with apispec from marshmallow schemas: the input rules' own schemas (rules.py)
and, below, the shapes of our answers. A route is documented by one entry in
`ROUTES`; the test suite checks the document is valid, that every API route of the
app is in it, and runs schemathesis against the live app with it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, json
from marshmallow import RAISE, Schema, fields, validate

from .container import Services
from .rules import (
    CUSTOMER_ID_RE,
    CUSTOMER_ID_RULE,
    MAX_TTL,
    TAG_RE,
    USER_ID_RE,
    USER_ID_RULE,
    TagsBody,
    WalletQuerySchema,
)
from .tags.model import state_word
from .triggers.model import STATES
from .triggers.outbox import PRUNED
from .triggers.schema import TriggerBody
from .version import __version__

bp = Blueprint("openapi", __name__)
TAGGING_STATES = [*(state_word(state) for state in STATES), PRUNED]


def init_app(app: Flask, found: Services) -> None:
    app.register_blueprint(bp)


class _Strict(Schema):
    """An answer's shape, exactly: an unknown key fails, so the contract can't drift."""

    class Meta:
        unknown = RAISE


class OfferAnswer(_Strict):
    user_offer_id = fields.String(required=True)
    offer_id = fields.String(required=True)
    offer_type = fields.String(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    terms = fields.String(required=True)
    logo_url = fields.String(required=True, metadata={"description": "Empty when none."})
    pos_discount_id = fields.String(required=True)
    points = fields.Integer(required=True, strict=True)
    expires_at = fields.String(
        required=True,
        validate=validate.Regexp(r"^(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)?\Z"),
        metadata={"description": "UTC, like 2026-12-31T23:59:59Z; empty: never expires."},
    )
    expires_in_days = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=-1),
        metadata={"description": "Whole UTC calendar days left: 0 today, -1 never expires."},
    )


class WalletAnswer(_Strict):
    """What Braze gets: flat, every key always present, stable types (Liquid-friendly)."""

    user_id = fields.String(required=True)
    culture = fields.String(required=True)
    available_points = fields.Integer(required=True, strict=True)
    total_points = fields.Integer(required=True, strict=True)
    offer_count = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0),
        metadata={"description": "Every live offer, also those `limit` left out."},
    )
    has_offers = fields.Boolean(required=True, truthy={True}, falsy={False})
    offers = fields.List(fields.Nested(OfferAnswer), required=True)
    fetched_at = fields.String(
        required=True, metadata={"description": "When SessionM answered (UTC)."}
    )
    stale = fields.Boolean(
        required=True,
        truthy={True},
        falsy={False},
        metadata={"description": "An older copy, answered while SessionM could not be asked."},
    )
    offers_truncated = fields.Boolean(
        required=True,
        truthy={True},
        falsy={False},
        metadata={"description": "Offers were left out to keep the answer under Braze's 1 MB."},
    )


class ErrorDetail(_Strict):
    code = fields.String(required=True, metadata={"example": "invalid_request"})
    message = fields.String(required=True)


class ErrorAnswer(_Strict):
    """Every error the service answers itself, API and probes alike."""

    error = fields.Nested(ErrorDetail, required=True)


class TagsAnswer(_Strict):
    id_type = fields.String(required=True, validate=validate.OneOf(["user", "external"]))
    id = fields.String(required=True)
    tags = fields.List(fields.String(validate=validate.Regexp(TAG_RE)), required=True)
    ttl = fields.Integer(
        required=True,
        allow_none=True,
        strict=True,
        validate=validate.Range(1, MAX_TTL),
        metadata={"description": "Seconds; null for a counter tag."},
    )


class TagsQueued(TagsAnswer):
    tagging_id = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(TAGGING_STATES),
        metadata={
            "description": "The tagging's state now (a repeat answers the first's; `pruned` "
            "when that was applied and its record removed to make room)."
        },
    )


class TriggerAccepted(_Strict):
    trigger_id = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf([*STATES, PRUNED]),
        metadata={
            "description": "The trigger's state now (a repeat answers the first's; `pruned` "
            "when that was sent and its record removed to make room)."
        },
    )


class LiveAnswer(_Strict):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadyAnswer(_Strict):
    status = fields.String(
        required=True, validate=validate.OneOf(["ok", "degraded", "unavailable"])
    )
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


# What each status means wherever it appears; a route lists the statuses it can answer.
STATUSES = {
    400: "The request breaks an input rule; the message names it.",
    401: "No valid API key (Bearer, or the password of HTTP Basic).",
    404: "SessionM does not know this customer.",
    409: "A request with this Idempotency-Key is still being processed; retry shortly.",
    413: "The body is larger than the route's cap.",
    422: "This Idempotency-Key was used with a different body.",
    502: "SessionM answered with something unusable.",
    503: "SessionM is unavailable, or calls to it are paused; see Retry-After.",
    504: "SessionM did not answer within the deadline.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
REQUEST_ID = {
    "X-Request-ID": {
        "description": "The caller's X-Request-ID when valid, else the id this service logged.",
        "schema": {"type": "string"},
    }
}


@dataclass(frozen=True)
class Route:
    """One documented operation. `ok` is the schema of its `ok_status` answer, `also_ok`
    other successes (status: meaning and schema); every other status in `statuses` answers
    the error shape (with the meaning in STATUSES unless given)."""

    method: str
    path: str  # OpenAPI's template: /v1/wallets/{user_id}
    summary: str
    tag: str
    ok: type[Schema]
    statuses: Mapping[int, str | None]  # besides `ok_status`; None: the meaning in STATUSES
    parameters: tuple[dict[str, Any], ...] = ()
    body: type[Schema] | None = None
    ok_headers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    secured: bool = True
    ok_status: int = 200
    description: str = ""
    also_ok: Mapping[int, tuple[str, type[Schema]]] = field(default_factory=dict)

    def operation(self) -> dict[str, Any]:
        responses: dict[str, Any] = {
            str(self.ok_status): _answer("OK", self.ok, {**REQUEST_ID, **self.ok_headers}),
        }
        for status, (success, schema) in self.also_ok.items():
            responses[str(status)] = _answer(success, schema, {**REQUEST_ID, **self.ok_headers})
        for status, meaning in sorted(self.statuses.items()):
            headers = {**REQUEST_ID, **(RETRY_AFTER if status in (409, 503) else {})}
            responses[str(status)] = _answer(meaning or STATUSES[status], ErrorAnswer, headers)
        operation: dict[str, Any] = {
            "summary": self.summary,
            **({"description": self.description} if self.description else {}),
            "tags": [self.tag],
            "operationId": f"{self.method}_{re.sub(r'[^a-z]+', '_', self.path).strip('_')}",
            "parameters": list(self.parameters),
            "responses": responses,
        }
        if self.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.body}},
            }
        if self.secured:
            operation["security"] = [{"bearer": []}, {"basic": []}]
        return operation


def _answer(description: str, schema: type[Schema], headers: dict) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": schema}},
    }


def _path(name: str, regex: re.Pattern[str], rule: str, **extra: Any) -> dict[str, Any]:
    schema = {"type": "string", "pattern": regex.pattern, **extra}
    return {"in": "path", "name": name, "required": True, "description": rule, "schema": schema}


WALLET_ID = _path("user_id", USER_ID_RE, f"The SessionM user id: {USER_ID_RULE}.")
CUSTOMER_ID = _path(
    "user_id",
    CUSTOMER_ID_RE,
    f"The customer id: {CUSTOMER_ID_RULE}.",
    **{"not": {"enum": [".", ".."]}},
)
IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "A retry with the same key and body gets the first answer, and SessionM "
    "no second call (kept 24 hours).",
    "schema": {"type": "string", "pattern": r"^[\x20-\x7e]{1,255}$"},
}
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the answer to an earlier request with the same key.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
TAGS_STATUSES: dict[int, str | None] = {
    400: None,
    401: None,
    404: "Direct mode: SessionM Core does not know this customer.",
    409: None,
    413: None,
    422: None,
    502: "Direct mode: SessionM answered with something unusable.",
    503: "SessionM Core is not configured; queued mode: the queue is full, the outbox's "
    "disk is full, it can't store, or it did not confirm in time (tags_maybe_stored: send "
    "again with the same Idempotency-Key); direct mode: SessionM is unavailable. See "
    "Retry-After.",
    504: "Direct mode: SessionM did not answer within the deadline.",
}

# Every API route, once. A new route is one more entry here.
ROUTES: list[Route] = [
    Route(
        "get",
        "/v1/wallets/{user_id}",
        "A customer's live offers and points, for Braze Connected Content",
        "wallet",
        WalletAnswer,
        {400: None, 401: None, 404: None, 502: None, 503: None, 504: None},
        parameters=(WALLET_ID, {"in": "query", "schema": WalletQuerySchema}),
        ok_headers={
            "X-Cache": {
                "description": "HIT, MISS or STALE.",
                "schema": {"type": "string", "enum": ["HIT", "MISS", "STALE"]},
            },
            "Age": {
                "description": "Seconds since SessionM answered.",
                "schema": {"type": "integer"},
            },
        },
    ),
    *(
        Route(
            "post",
            path,
            f"Tag a customer by {named_by} (Braze webhook to SessionM Core)",
            "tags",
            TagsQueued,
            TAGS_STATUSES,
            parameters=(CUSTOMER_ID, IDEMPOTENCY_KEY),
            body=TagsBody,
            ok_headers=REPLAYED,
            ok_status=202,
            also_ok={
                200: (
                    "Direct mode (WALLET_PROXY_TAGS_MODE=direct): SessionM applied the tags.",
                    TagsAnswer,
                )
            },
            description="Queued mode (the default): 202 once stored durably; a worker applies "
            "the tags to SessionM Core at Core's budget, at most once each. A repeat (same "
            "Idempotency-Key within 24 hours) answers the first tagging's id and state.",
        )
        for path, named_by in (
            ("/v1/users/{user_id}/tags", "SessionM user id"),
            ("/v1/external-users/{user_id}/tags", "external id"),
        )
    ),
    Route(
        "post",
        "/v1/braze/triggers",
        "A message for Braze from a SessionM campaign, stored, then delivered",
        "triggers",
        TriggerAccepted,
        {
            400: None,
            401: "No valid trigger key (WALLET_PROXY_TRIGGER_KEYS; Bearer, or Basic's password).",
            413: None,
            422: None,
            503: "Braze is not configured, the queue is full, the outbox's disk is full, it "
            "can't store, or it did not confirm in time (trigger_maybe_stored: send again "
            "with the same Idempotency-Key); see Retry-After.",
        },
        parameters=(IDEMPOTENCY_KEY,),
        body=TriggerBody,
        ok_headers=REPLAYED,
        ok_status=202,
        description="Exactly one of braze_campaign_id and braze_canvas_id; a customer unless "
        "broadcast is true, never with it, named by at most one of external_id, braze_id and "
        "user_alias, else by email; enrich [wallet] (the wallet summary in the properties) "
        "and [attributes] (the loyalty attributes that changed, set on the profile) need "
        "customer.sessionm_user_id. "
        "202 once stored durably; a repeat (same Idempotency-Key within 7 days, or the same "
        "body without one within 10 minutes) answers the first trigger's id and state.",
    ),
    Route(
        "get", "/healthz", "Liveness: the process answers", "health", LiveAnswer, {}, secured=False
    ),
    Route(
        "get",
        "/readyz",
        "Readiness: settings valid and the cache answers",
        "health",
        ReadyAnswer,
        {503: "Not ready: the cache does not answer."},
        secured=False,
    ),
]


def _ecma(node: Any) -> Any:
    """Python's end-of-text `\\Z` as ECMA-262's `$`, in every pattern (rules.py's regexes are
    written for Python; JSON Schema patterns are ECMA's)."""
    if isinstance(node, dict):
        return {
            key: value.replace(r"\Z", "$")
            if key == "pattern" and isinstance(value, str)
            else _ecma(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_ecma(item) for item in node]
    return node


def _absent_is_not_null(
    converter: Any, field: fields.Field, ret: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """A field whose `load_default` is None but refuses null (the tags' `ttl`) may be left out;
    null is not its default."""
    if "default" in ret and ret["default"] is None and not field.allow_none:
        del ret["default"]
    return {}


@functools.cache
def document() -> dict[str, Any]:
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="wallet-proxy",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={
            "description": "SessionM offer wallets for Braze Connected Content, and a "
            "relay from Braze webhooks to SessionM customer tags."
        },
    )
    assert marshmallow.converter is not None  # set by APISpec
    marshmallow.converter.add_attribute_function(_absent_is_not_null)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("basic", {"type": "http", "scheme": "basic"})
    for route in ROUTES:
        spec.path(path=route.path, operations={route.method: route.operation()})
    return _ecma(spec.to_dict())


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(json.dumps(document()), mimetype="application/json")
