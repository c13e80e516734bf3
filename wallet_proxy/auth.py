"""Who may call: API keys for Braze (Bearer, or the password of HTTP Basic).

Braze can store either a bearer header or basic-auth credentials, so both carry
the same keys. Every comparison runs against every key in constant time, so
neither a key's content nor its position leaks through timing.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable

from flask import Request, request

from .container import services
from .errors import Unauthorized


def presented_key(request: Request) -> str | None:
    """The key in `Authorization`, whichever of the two schemes carries it."""
    return key_in_header(request.headers.get("Authorization", ""))


def key_in_header(header: str) -> str | None:
    """The key in an `Authorization` header's value (Bearer, or Basic's password)."""
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def key_matches(presented: str | None, keys: Iterable[str]) -> bool:
    if not presented:
        return False
    given = presented.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


def require_api_key() -> None:
    """For the API blueprints' `before_request`: one of WALLET_PROXY_API_KEYS, or 401."""
    if not key_matches(presented_key(request), services().settings.api_keys):
        raise Unauthorized()
