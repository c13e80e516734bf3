"""The one place the error tree (errors.py) becomes HTTP: JSON for the API, a page for people.

Every error a view raises, Werkzeug's own HTTP errors and anything unexpected end here, so
no view decides statuses and no traceback ever reaches a client.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .errors import Unauthorized, WalletProxyError, error_body
from .request_log import route_of

log = logging.getLogger(__name__)


def _wants_page() -> bool:
    """People get pages (the support blueprint); everything else gets JSON."""
    return request.blueprint == "support" or request.path.startswith("/support/")


def _respond(error: WalletProxyError, headers: dict | None = None):
    if _wants_page():
        response = current_app.make_response(
            (render_template("support/error.html", error=error), error.status)
        )
    else:
        response = jsonify(error_body(error))
        response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _http_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(WalletProxyError)
    def handle_ours(error: WalletProxyError):
        headers = {}
        if isinstance(error, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="wallet-proxy", Basic realm="wallet-proxy"'
        return _respond(error, headers)

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException):
        error = WalletProxyError(exc.description)
        error.status = exc.code or 500
        error.code = _http_code(exc)
        response = _respond(error)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, route_of(request))
        return _respond(WalletProxyError())
