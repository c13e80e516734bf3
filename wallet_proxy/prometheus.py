"""`GET /metrics` for Prometheus: the metrics of metrics.py, behind their own bearer token.

The token (WALLET_PROXY_METRICS_TOKEN) is not an API key: Braze's keys don't open
it, and it opens nothing else. Without a token configured the route does not exist
(404), so an instance never serves its metrics to whoever asks.

Served by several worker processes without prometheus_client's multiprocess folder, a
scrape would count only the worker that answers it: the route says so (503) rather than
serve a fraction as the whole. The WSGI server says whether other processes serve the
app (`wsgi.multiprocess`: gunicorn with more than one worker).
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, abort, request
from prometheus_client import CONTENT_TYPE_LATEST

from . import metrics, request_log
from .auth import key_matches, presented_key
from .container import Services, services
from .errors import NotConfigured, Unauthorized

bp = Blueprint("prometheus", __name__)


def init_app(app: Flask, found: Services) -> None:
    app.register_blueprint(bp)


@bp.get("/metrics")
def scrape() -> Response:
    found = services()
    token = found.settings.metrics_token
    if token is None:
        abort(404)
    if not key_matches(presented_key(request), (token,)):  # constant time
        raise Unauthorized("A valid metrics token is required.")
    if request.environ.get("wsgi.multiprocess") and not metrics.summed_across_processes():
        raise NotConfigured(
            "Several worker processes serve this app and PROMETHEUS_MULTIPROC_DIR is not set, "
            "so a scrape would count only the worker answering it. Set it to an empty folder "
            "for the workers' metrics; the packaged gunicorn config does (`gunicorn wsgi:app` "
            "from the project root, or `wallet-proxy serve`)."
        )
    request_log.flush_all()  # this worker's latest answers are counted too
    found.prepare_scrape()  # gauges only a scrape reads
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
