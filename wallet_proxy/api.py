"""The Braze-facing API: thin views over the wallet service."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, Response, current_app, request

from .auth import require_api_key
from .config import CULTURE_RE
from .errors import InvalidRequest
from .service import Lookup

bp = Blueprint("api", __name__, url_prefix="/v1")

USER_ID_RE = re.compile(r"^[A-Za-z0-9._\-@+:]{1,128}\Z")
LIMIT_RE = re.compile(r"^[0-9]{1,4}\Z")


@dataclass(frozen=True, slots=True)
class WalletQuery:
    """Query of GET /v1/wallets/<id>; unknown parameters (cache-busters) are ignored."""

    user_id: str
    culture: str | None
    limit: int | None


def parse_query(user_id: str, args) -> WalletQuery:
    """Checked by hand rather than by a schema: this runs on every cache hit."""
    if not USER_ID_RE.match(user_id):
        raise InvalidRequest("user_id must be 1 to 128 characters of A-Z a-z 0-9 . _ - @ + :")
    # `in` first: werkzeug's MultiDict.get builds an exception for every missing key,
    # which doubled the cost of this function on the cache-hit path.
    # An empty culture (a blank ${language} in Braze) means the default.
    culture = (args["culture"] if "culture" in args else None) or None  # noqa: SIM401
    if culture is not None and not CULTURE_RE.match(culture):
        raise InvalidRequest("culture must look like en, en-US, es-419 or zh-Hant-TW.")
    limit = args["limit"] if "limit" in args else None  # noqa: SIM401
    if limit is not None:
        if not LIMIT_RE.match(limit) or not 1 <= int(limit) <= 1000:
            raise InvalidRequest("limit must be a whole number from 1 to 1000.")
        limit = int(limit)
    return WalletQuery(user_id, culture, limit)


def render(lookup: Lookup, now: datetime, limit: int | None) -> bytes:
    """The exact bytes Braze gets for this lookup (the support pages show the same)."""
    return current_app.extensions["answers"].render(lookup, now, limit)


bp.before_request(require_api_key)


@bp.get("/wallets/<user_id>")
def get_wallet(user_id: str):
    query = parse_query(user_id, request.args)
    service = current_app.extensions["wallet_service"]
    culture = query.culture or current_app.config["SETTINGS"].default_culture
    lookup = service.lookup(user_id, culture)
    now = service.clock()
    return Response(
        render(lookup, now, query.limit),
        mimetype="application/json",
        headers={"X-Cache": lookup.cache, "Age": str(lookup.age(now))},
    )
