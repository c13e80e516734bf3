"""Probes for load balancers and Kubernetes: no auth, never a call to SessionM."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify

from .container import Services, services
from .triggers.setup import outbox_of

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
    The circuit breaker's state is shown for the same reason, without effect, and so is
    a full disk under the outbox: intake refuses, delivery goes on, wallets too.
    """
    checks = {"config": "ok"}
    try:
        checks.update(services().wallet_service.status())
    except Exception:  # a probe reports, it never raises
        checks["cache"] = "unusable"
    outbox = outbox_of()
    if outbox is not None:
        try:
            checks.update(outbox.checks())
        except Exception:
            checks["disk"] = "unknown"
    ready = checks["cache"] == "ok"
    degraded = any(checks.get(name, "ok") != "ok" for name in ("redis", "disk"))
    status = ("degraded" if degraded else "ok") if ready else "unavailable"
    response = jsonify(status=status, checks=checks)
    response.status_code = 200 if ready else 503
    return response
