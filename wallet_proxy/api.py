"""The Braze-facing API: thin views over the wallet service."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Flask, Response, request

from .auth import require_api_key
from .container import Services, services
from .rules import parse_wallet_query
from .wallet_service import Lookup

bp = Blueprint("api", __name__, url_prefix="/v1")


def init_app(app: Flask, found: Services) -> None:
    app.register_blueprint(bp)


def render(lookup: Lookup, now: datetime, limit: int | None) -> bytes:
    """The exact bytes Braze gets for this lookup (the support pages show the same)."""
    return services().answers.render(lookup, now, limit)


bp.before_request(require_api_key)


@bp.get("/wallets/<user_id>")
def get_wallet(user_id: str):
    query = parse_wallet_query(user_id, request.args)
    found = services()
    lookup = found.wallet_service.lookup(user_id, query.culture or found.settings.default_culture)
    now = found.clock()
    return Response(
        render(lookup, now, query.limit),
        mimetype="application/json",
        headers={"X-Cache": lookup.cache, "Age": str(lookup.age(now))},
    )
