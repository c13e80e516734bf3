"""The Braze-facing API: thin views over the wallet service."""

from __future__ import annotations

import json
from datetime import datetime

from flask import Blueprint, Response, current_app, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from .auth import key_matches, presented_key
from .config import CULTURE_RE
from .errors import InvalidRequest, Unauthorized
from .service import Lookup
from .wallet import wallet_answer

bp = Blueprint("api", __name__, url_prefix="/v1")

USER_ID = validate.Regexp(r"^[A-Za-z0-9._\-@+:]{1,128}$")


class WalletQuery(Schema):
    """Query of GET /v1/wallets/<id>; unknown parameters (cache-busters) are ignored."""

    class Meta:
        unknown = EXCLUDE

    culture = fields.String(
        load_default=None,
        validate=validate.Regexp(CULTURE_RE, error="must look like en, en-US, es-419."),
    )
    limit = fields.Integer(
        load_default=None,
        strict=False,
        validate=validate.Range(1, 1000, error="must be a whole number from 1 to 1000."),
        error_messages={"invalid": "must be a whole number from 1 to 1000."},
    )


WALLET_QUERY = WalletQuery()


def parse_query(user_id: str, args) -> dict:
    try:
        USER_ID(user_id)
    except ValidationError:
        raise InvalidRequest(
            "user_id must be 1 to 128 characters of A-Z a-z 0-9 . _ - @ + :"
        ) from None
    try:
        query = WALLET_QUERY.load(
            {name: args[name] for name in ("culture", "limit") if name in args}
        )
    except ValidationError as exc:
        name, problems = next(iter(sorted(exc.messages.items())))
        raise InvalidRequest(f"{name} {problems[0]}") from None
    return query


def render(lookup: Lookup, now: datetime, limit: int | None) -> bytes:
    """The exact bytes Braze gets for this lookup (the support pages show the same)."""
    body = wallet_answer(lookup.wallet, now, limit=limit, stale=lookup.stale)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@bp.before_request
def require_api_key():
    settings = current_app.config["SETTINGS"]
    if not key_matches(presented_key(request), settings.api_keys):
        raise Unauthorized()


@bp.get("/wallets/<user_id>")
def get_wallet(user_id: str):
    query = parse_query(user_id, request.args)
    service = current_app.extensions["wallet_service"]
    culture = query["culture"] or current_app.config["SETTINGS"].default_culture
    lookup = service.lookup(user_id, culture)
    now = service.clock()
    response = Response(render(lookup, now, query["limit"]), mimetype="application/json")
    response.headers["X-Cache"] = lookup.cache
    response.headers["Age"] = str(lookup.age(now))
    return response
