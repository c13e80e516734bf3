"""Probes for load balancers and Kubernetes: no auth, never a call to SessionM."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers HTTP."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: settings were valid at start-up and the cache answers.

    A lost Redis is reported but keeps the instance ready: it still answers from
    its in-process cache, and failing every instance at once would be an outage.
    The circuit breaker's state is shown for the same reason, without effect.
    """
    service = services().wallet_service
    checks = {"config": "ok"}
    try:
        checks.update(service.cache.status())
    except Exception:  # a probe reports, it never raises
        checks["cache"] = "unusable"
    checks["sessionm_circuit"] = service.guard.breaker.state
    ready = checks["cache"] == "ok"
    degraded = checks.get("redis", "ok") != "ok"
    status = ("degraded" if degraded else "ok") if ready else "unavailable"
    response = jsonify(status=status, checks=checks)
    response.status_code = 200 if ready else 503
    return response
