"""What the service believes about a request that came through proxies.

Two settings, both off by default:

- WALLET_PROXY_TRUSTED_PROXY_HOPS: how many proxies in front of us append to
  `X-Forwarded-For`. Only that many entries, counted from the right, are believed
  (werkzeug's ProxyFix); the client address is the one they name. With 0 the
  header is ignored and the client is whoever connected (the front proxy, if any).
- WALLET_PROXY_PUBLIC_URL: the origin staff and Braze reach us at. When set, every
  request is handled as if addressed to it, so the Connected Content snippet and the
  Secure cookie flag never follow a `Host` header someone sent.

Redirects to our own pages name only the path, whatever `Host` said, with or without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from flask import Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from flask import Flask

    from .config import Settings


class PublicUrl:
    """WSGI middleware: the request's scheme and host are the public URL's."""

    def __init__(self, app: Any, public_url: str):
        parts = urlsplit(public_url)
        self.app = app
        self.scheme = parts.scheme
        self.host = parts.netloc

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.url_scheme"] = self.scheme
        environ["HTTP_HOST"] = self.host
        return self.app(environ, start_response)


def relative_redirect(response: Response) -> Response:
    """A redirect to this service (werkzeug's own, such as `/support` to `/support/`, are
    absolute, built from `Host`) as a path alone: a forged Host can't send anyone away."""
    location = response.headers.get("Location")
    if location:
        parts = urlsplit(location)
        if parts.netloc and parts.netloc.lower() == request.host.lower():
            path = "/" + parts.path.lstrip("/")  # never `//host`, which names another host
            response.headers["Location"] = urlunsplit(("", "", path, parts.query, parts.fragment))
    return response


def wire_front_proxies(app: Flask, settings: Settings) -> None:
    app.after_request(relative_redirect)
    if settings.trusted_proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=0, x_host=0, x_port=0
        )
    if settings.public_url:
        app.wsgi_app = PublicUrl(app.wsgi_app, settings.public_url)  # type: ignore[method-assign]
