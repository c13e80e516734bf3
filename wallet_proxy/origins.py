"""Web origins (`scheme://host[:port]`): which image URLs a staff browser may load.

SessionM names each offer's images by URL. A staff browser that loaded any of them
would tell whoever wrote that URL which customer an agent opened, and when (a
tracking pixel). So the pages load images only from origins the operator lists in
WALLET_PROXY_IMAGE_HOSTS, the Content-Security-Policy says the same, and any other
URL is shown as text.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ORIGIN_RULE = "like https://images.example.com or http://127.0.0.1:8001"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Whitespace, control characters and backslashes: browsers and urlsplit may read the
# authority of such a URL differently, so it is never an allowed image.
_AMBIGUOUS = re.compile(r"[\x00-\x20\x7f\\]")


def origin_of(url: str) -> str | None:
    """The normalised origin of an http(s) URL; None for any other or ambiguous URL."""
    if not url.isascii() or _AMBIGUOUS.search(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_origin(text: str) -> str | None:
    """An origin as an operator writes it (a trailing slash is fine, a path is not)."""
    parts = urlsplit(text) if text.isascii() else None
    if parts is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return origin_of(text)
