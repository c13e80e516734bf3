"""Probes for load balancers and Kubernetes: no auth, never a call to SessionM."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers HTTP."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: settings were valid at start-up and the cache answers."""
    checks = {"config": "ok"}
    try:
        usable = current_app.extensions["wallet_service"].cache.usable()
    except Exception:  # a probe reports, it never raises
        usable = False
    checks["cache"] = "ok" if usable else "unusable"
    ready = all(value == "ok" for value in checks.values())
    response = jsonify(status="ok" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    return response
