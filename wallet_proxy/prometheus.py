"""`GET /metrics` for Prometheus: the metrics of metrics.py, behind their own bearer token.

The token (WALLET_PROXY_METRICS_TOKEN) is not an API key: Braze's keys don't open
it, and it opens nothing else. Without a token configured the route does not exist
(404), so an instance never serves its metrics to whoever asks.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, abort, request
from prometheus_client import CONTENT_TYPE_LATEST

from . import metrics, request_log
from .auth import key_matches, presented_key
from .container import Services, services
from .errors import Unauthorized

bp = Blueprint("prometheus", __name__)


def init_app(app: Flask, found: Services) -> None:
    app.register_blueprint(bp)


@bp.get("/metrics")
def scrape() -> Response:
    token = services().settings.metrics_token
    if token is None:
        abort(404)
    if not key_matches(presented_key(request), (token,)):  # constant time
        raise Unauthorized("A valid metrics token is required.")
    request_log.flush_all()  # this worker's latest answers are counted too
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
