"""Probes for load balancers and Kubernetes: no auth, never a call to SessionM."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify

from .container import Services, services

bp = Blueprint("health", __name__)


def init_app(app: Flask, found: Services) -> None:
    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers HTTP."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: settings were valid at start-up and the cache answers.

    A lost Redis is reported but keeps the instance ready: it still answers from
    its in-process cache, and failing every instance at once would be an outage.
    The circuit breaker's state is shown for the same reason, without effect, and so are
    the features' checks: a full disk under the outbox (intake refuses, delivery goes on,
    wallets too), stalled triggers (every instance shares the cause).
    """
    checks = {"config": "ok"}
    found = services()
    try:
        checks.update(found.wallet_service.status())
    except Exception:  # a probe reports, it never raises
        checks["cache"] = "unusable"
    features = found.readiness()
    checks.update(features)
    ready = checks["cache"] == "ok"
    degraded = checks.get("redis", "ok") != "ok" or any(v != "ok" for v in features.values())
    status = ("degraded" if degraded else "ok") if ready else "unavailable"
    response = jsonify(status=status, checks=checks)
    response.status_code = 200 if ready else 503
    return response
